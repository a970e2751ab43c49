import type { Lock } from "../lock/lock.js";

/**
 * What a caller with a `signal` awaits: `acquiring`, except that it rejects with the signal's
 * reason as soon as the signal aborts. The call itself may still wait for replies then (which
 * servers new connections reach, an attempt or a give-back in flight, a SUBSCRIBE): it sends no
 * attempt after the abort, gives back what one in flight took once it answered, and quit() still
 * waits for it. A lock it won just as the signal aborted is given back (`AcquireParts.giveBack`).
 */
export function abortable(
  acquiring: Promise<Lock | null>,
  signal: AbortSignal,
  giveBack: (lock: Lock, announced: boolean) => Promise<boolean>,
): Promise<Lock | null> {
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    acquiring.then(
      (lock) => {
        signal.removeEventListener("abort", onAbort);
        // aborted after the call won, before this ran: the caller was already told the reason
        if (!signal.aborted) resolve(lock);
        // (the point channel heard it acquired: its release is published too)
        else if (lock !== null) giveBack(lock, true).catch(() => {});
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
