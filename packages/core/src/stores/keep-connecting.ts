import type { Redis } from "ioredis";

/** ioredis's message for a connection attempt cut off by a disconnect. */
const CUT_OFF = "Connection is closed.";
const FIRST_DELAY_MS = 50;
const MAX_DELAY_MS = 2000;
/** Connections Redlock is closing: they stay ended. */
const closing = new WeakSet<Redis>();

/**
 * ioredis ends a client for good (status "end", no more reconnects) when its connector is told to
 * disconnect while a connection attempt is under way, without the client asking. Its Sentinel
 * failover detector does that: a `+switch-master` heard while the client asks a sentinel for the
 * master (between two attempts, during a failover) cuts the attempt off with "Connection is
 * closed.", and the client never connects again: a Redlock on Sentinel options lost that instance
 * after an ordinary failover (packages/core/test/sentinel.test.ts). For a connection Redlock opened
 * itself (a client made from options or a URL, a subscriber), this connects it again, unless
 * Redlock is closing it (`letEnd`). A disconnect the client asked for (`quit()`, `disconnect()`) is
 * not a cut-off: ioredis then keeps that error to itself.
 */
export function keepConnecting(client: Redis): void {
  let cutOff = false;
  /** Reconnects in a row without reaching "ready": each waits twice as long, so that nothing spins. */
  let again = 0;
  client.on("error", (error: unknown) => {
    if (client.status === "connecting" && error instanceof Error && error.message === CUT_OFF) cutOff = true;
  });
  client.on("ready", () => {
    again = 0;
  });
  client.on("end", () => {
    if (!cutOff || closing.has(client)) return;
    cutOff = false;
    const delay = Math.min(FIRST_DELAY_MS * 2 ** again++, MAX_DELAY_MS);
    setTimeout(() => {
      if (client.status === "end" && !closing.has(client)) client.connect().catch(() => {});
    }, delay).unref();
  });
}

/** Redlock closes `client` now: once ended, it is not connected again. */
export function letEnd(client: Redis): void {
  closing.add(client);
}
