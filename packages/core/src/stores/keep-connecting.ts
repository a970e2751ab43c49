import type { Redis } from "ioredis";

/** ioredis's message for a connection attempt cut off by a disconnect. */
const CUT_OFF = "Connection is closed.";
/** Connections Redlock is closing: they stay ended. */
const closing = new WeakSet<Redis>();
/** The reconnect a cut-off connection waits for: `letEnd` clears it, so that no timer outlives `quit()`. */
const pending = new WeakMap<Redis, NodeJS.Timeout>();

/**
 * ioredis ends a client for good (status "end", no more reconnects) when its connector is told to
 * disconnect while a connection attempt is under way, without the client asking. Its Sentinel
 * failover detector does that: a `+switch-master` heard while the client asks a sentinel for the
 * master (between two attempts, during a failover) cuts the attempt off with "Connection is
 * closed.", and the client never connects again: a Redlock on Sentinel options lost that instance
 * after an ordinary failover (packages/core/test/sentinel.test.ts). For a connection Redlock opened
 * itself (a client made from options or a URL, a subscriber), this does what ioredis does after a
 * failed attempt: it asks the client's `retryStrategy` and connects again after the delay it
 * returns; a strategy that says stop (no function, or not a number) leaves the client ended, as
 * ioredis would. No other end is undone: a disconnect asked for (`quit()`, `disconnect()`: ioredis
 * keeps that error to itself), a `retryStrategy` or `sentinelRetryStrategy` that said stop (other
 * errors, or none), nor a connection Redlock is closing (`letEnd`).
 */
export function keepConnecting(client: Redis): void {
  let cutOff = false;
  /**
   * ioredis's `times`: the attempts since the client was last ready, a cut-off one included (ioredis's
   * own count, private, misses ours: its next ask after a revive repeats that `times`).
   */
  let attempts = 0;
  client.on("error", (error: unknown) => {
    if (client.status === "connecting" && error instanceof Error && error.message === CUT_OFF) cutOff = true;
  });
  client.on("ready", () => {
    attempts = 0;
  });
  // ioredis asked the retryStrategy and reconnects
  client.on("reconnecting", () => {
    attempts++;
  });
  client.on("end", () => {
    if (!cutOff || closing.has(client)) return;
    cutOff = false;
    const { options } = client;
    const delay = typeof options.retryStrategy === "function" ? options.retryStrategy(++attempts) : undefined;
    if (typeof delay !== "number") return;
    const timer = setTimeout(() => {
      pending.delete(client);
      if (client.status === "end" && !closing.has(client)) client.connect().catch(() => {});
    }, delay);
    timer.unref();
    pending.set(client, timer);
  });
}

/** Redlock closes `client` now: once ended, it is not connected again (a reconnect it waited for is dropped). */
export function letEnd(client: Redis): void {
  closing.add(client);
  clearTimeout(pending.get(client));
  pending.delete(client);
}
