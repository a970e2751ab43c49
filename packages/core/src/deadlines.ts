import { performance } from "node:perf_hooks";

/** A bounded wait (or a scheduled renewal) registered with `deadlines`. */
export interface Deadline {
  readonly at: number;
  readonly onExpire: () => void;
}

/**
 * One timer for every per-instance bound and auto-extension in the process. Arming and clearing
 * a Node timer for each Redis call cost more than the rest of Redlock's own work per lock+unlock
 * (bench/); here they share one timer, armed for the earliest deadline and re-armed when it
 * fires, so a steady stream of calls touches the timer about once per timeout period.
 */
class Deadlines {
  readonly #pending = new Set<Deadline>();
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Number.POSITIVE_INFINITY;

  /** Calls `onExpire` once `ms` have passed, unless `cancel` is called first. */
  add(ms: number, onExpire: () => void): Deadline {
    const deadline: Deadline = { at: performance.now() + ms, onExpire };
    this.#pending.add(deadline);
    if (deadline.at < this.#timerAt) this.#arm(deadline.at);
    return deadline;
  }

  cancel(deadline: Deadline): void {
    this.#pending.delete(deadline);
  }

  #arm(at: number): void {
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(this.#fire, Math.max(0, Math.ceil(at - performance.now())));
    // A bound is not a reason to stay alive: whatever a call waits on (a socket, ioredis's
    // reconnect timer) keeps the process running while the call is in flight.
    this.#timer.unref();
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    // the timer's millisecond clock may fire a fraction of a millisecond early
    const now = performance.now() + 1;
    const expired: Deadline[] = [];
    let next = Number.POSITIVE_INFINITY;
    for (const deadline of this.#pending) {
      if (deadline.at <= now) {
        this.#pending.delete(deadline);
        expired.push(deadline);
      } else if (deadline.at < next) next = deadline.at;
    }
    if (next !== Number.POSITIVE_INFINITY) this.#arm(next);
    if (expired.length === 0) return;
    // Timers run before pending socket reads in the event loop: after a busy stretch both may be
    // due at once. setImmediate lets replies that already arrived be read before we give up.
    setImmediate(() => {
      for (const deadline of expired) deadline.onExpire();
    });
  };
}

export const deadlines = new Deadlines();
