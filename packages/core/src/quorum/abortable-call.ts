import type { Lock } from "../lock/lock.js";
import { type AcquireMessage, channels } from "../observe/diagnostics.js";
import type { AttemptCounter } from "../observe/tracing.js";

/**
 * The point-channel message of a call with a signal (`redlock-kit:acquire`), published by
 * `abortable` when the caller is told how the call ended: the call itself ends later than its
 * caller when the signal aborts first (it waits for replies, gives back what it won), and the
 * message must say what the caller saw, once (aborted, not acquired then released).
 */
export class PointEnding {
  /** The call's attempts as they are made: the tracing context's counter, or one of its own. */
  readonly counter: AttemptCounter;
  /** What the call published had it no signal (`AcquireLoop.#publish`): how it ended by itself. */
  message: AcquireMessage | undefined;
  #names: readonly string[] | undefined;
  #start = 0;
  readonly #clock: () => number;

  constructor(clock: () => number, counter: AttemptCounter | undefined) {
    this.#clock = clock;
    this.counter = counter ?? { attempts: 0 };
  }

  /** The call passed its argument checks (a call refused for them publishes nothing). */
  began(names: readonly string[]): void {
    this.#names = names;
    this.#start = this.#clock();
  }

  /** Its caller was told it ended as the call says (`message`). */
  ended(): void {
    if (this.message !== undefined && channels.acquire.hasSubscribers) channels.acquire.publish(this.message);
  }

  /** Its caller was told the signal's reason: the call is over for it, whatever it still does. */
  aborted(): void {
    const resources = this.#names;
    if (resources === undefined || !channels.acquire.hasSubscribers) return;
    const elapsedMs = this.#clock() - this.#start;
    channels.acquire.publish({ resources, outcome: "aborted", attempts: this.counter.attempts, elapsedMs });
  }
}

/**
 * What a caller with a `signal` awaits: `acquiring`, except that it rejects with the signal's
 * reason as soon as the signal aborts. The call itself may still wait for replies then (which
 * servers new connections reach, an attempt or a give-back in flight, a SUBSCRIBE): it sends no
 * attempt after the abort, gives back what one in flight took once it answered, and quit() still
 * waits for it. A lock it won just as the signal aborted is given back (`AcquireParts.giveBack`).
 * The point channel hears how the call ended for the caller, once (`ending`).
 */
export function abortable(
  acquiring: Promise<Lock | null>,
  signal: AbortSignal,
  giveBack: (lock: Lock) => Promise<boolean>,
  ending: PointEnding,
): Promise<Lock | null> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      reject(signal.reason);
      ending.aborted();
    };
    signal.addEventListener("abort", onAbort, { once: true });
    acquiring.then(
      (lock) => {
        signal.removeEventListener("abort", onAbort);
        if (!signal.aborted) {
          ending.ended();
          resolve(lock);
        }
        // aborted after the call won, before this ran: the caller was already told the reason, and
        // the point channel heard it aborted, so no release either
        else if (lock !== null) giveBack(lock).catch(() => {});
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        if (!signal.aborted) ending.ended();
        reject(error);
      },
    );
  });
}
