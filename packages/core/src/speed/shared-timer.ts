import { AsyncResource } from "node:async_hooks";
import { performance } from "node:perf_hooks";

/**
 * The shared timer, for speed only: every per-instance bound of a fan-out (quorum/ballot.ts) and
 * every auto-extension's next renewal (lock/auto-extend.ts) waits on one Node timer. What it buys:
 * arming and clearing a Node timer per Redis call cost more than the rest of Redlock's own work
 * per lock+unlock, in bench/ ("Sequential lock+unlock" and "Concurrent lock+unlock" rows, CPU per
 * lock+unlock). Without this module each bound would be its own `setTimeout`, with the same
 * outcomes.
 */

/**
 * Something that must happen at a time unless cancelled first: a per-instance bound of a fan-out,
 * an auto-extension's next renewal. Subclasses say what happens in `expire`. While pending it is
 * a node of the shared timer's list, so scheduling and cancelling allocate nothing.
 */
export abstract class Deadline {
  /** `performance.now()` ms at which it is due. */
  dueAt = 0;
  /** @internal list links, owned by `deadlines` */
  prev: Deadline | undefined = undefined;
  /** @internal */
  next: Deadline | undefined = undefined;
  /** @internal */
  pending = false;

  abstract expire(): void;
}

/**
 * One timer for every per-instance bound and auto-extension in the process. Arming and clearing
 * a Node timer for each Redis call cost more than the rest of Redlock's own work per lock+unlock
 * (bench/); here they share one timer, armed for the earliest deadline and re-armed when it
 * fires, so a steady stream of calls touches the timer about once per timeout period.
 */
class Deadlines {
  #head: Deadline | undefined;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Number.POSITIVE_INFINITY;

  /** Calls `deadline.expire()` once `ms` have passed, unless `cancel` is called first. */
  add(deadline: Deadline, ms: number): void {
    if (deadline.pending) this.cancel(deadline);
    deadline.dueAt = performance.now() + ms;
    deadline.pending = true;
    deadline.next = this.#head;
    if (this.#head !== undefined) this.#head.prev = deadline;
    this.#head = deadline;
    if (deadline.dueAt < this.#timerAt) this.#arm(deadline.dueAt);
  }

  cancel(deadline: Deadline): void {
    if (!deadline.pending) return;
    deadline.pending = false;
    const { prev, next } = deadline;
    if (prev === undefined) this.#head = next;
    else prev.next = next;
    if (next !== undefined) next.prev = prev;
    deadline.prev = undefined;
    deadline.next = undefined;
  }

  #arm(at: number): void {
    clearTimeout(this.#timer);
    this.#timerAt = at;
    const delay = Math.max(0, Math.ceil(at - performance.now()));
    this.#timer = TIMER_SCOPE.runInAsyncScope(setTimeout, undefined, this.#fire, delay);
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
    for (let deadline = this.#head; deadline !== undefined; ) {
      const following = deadline.next;
      if (deadline.dueAt <= now) {
        this.cancel(deadline);
        expired.push(deadline);
      } else if (deadline.dueAt < next) next = deadline.dueAt;
      deadline = following;
    }
    if (next !== Number.POSITIVE_INFINITY) this.#arm(next);
    if (expired.length === 0) return;
    // Timers run before pending socket reads in the event loop: after a busy stretch both may be
    // due at once. setImmediate lets replies that already arrived be read before we give up.
    setImmediate(() => {
      for (const deadline of expired) deadline.expire();
    });
  };
}

/**
 * The context the timer runs in: the one the module loaded in (the process's top level, unless core
 * was first imported inside a request). Armed in the context of the call at hand, the timer would
 * run every later renewal there, and it re-arms itself from where it fires: one request's context
 * (its AsyncLocalStorage stores, as NestJS's app of the call) would stay with every lock's renewal
 * and with the listeners of the signals those renewals abort, for good.
 */
const TIMER_SCOPE = new AsyncResource("redlock-kit:shared-timer");

export const deadlines = new Deadlines();
