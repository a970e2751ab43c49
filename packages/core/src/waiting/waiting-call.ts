import { performance } from "node:perf_hooks";
import type { LiveLocks } from "../lock/live-locks.js";
import type { ResolvedAcquireOptions } from "../options.js";
import { fanOut, type Vote } from "../quorum/ballot.js";
import { releaseCall } from "../quorum/requests.js";
import { isRefused, notTaken } from "../quorum/votes.js";
import type { AcquireReply, LockStore, QueueTicket } from "../stores/store.js";
import type { HandOvers, Waiter, Woken } from "./hand-over.js";

/**
 * The waiting of one acquire call that may wait (`wait` > 0 or `retryCount` > 0), as the acquire
 * loop sees it: a few calls, and everything about queues and hand-overs stays behind them.
 *
 * - `ticket(attemptStart)` before each attempt: the queue ticket to send with it, if the call can
 *   queue now;
 * - `settled(votes, acquired)` after each attempt;
 * - `join(attempts, contention)` after a failed attempt: queues the call if it is not yet, and says
 *   whether to try again at once (refused before it could queue: it is the same attempt, now in line);
 * - `sleep(ms, held, signal)` until the keys are handed over or `ms` pass, then `grantedAt()`:
 *   whether a quorum granted them outright (`tookGrant()` if the call keeps them); again with the
 *   call's deadline once it gives up, for grants heard while its last attempt was on its way;
 * - `end()` in `finally`: leaves the queues and lets go of keys handed over but not claimed.
 *
 * A call that cannot wait, or whose instances cannot hand keys over, gets none: it polls with
 * `sleep` below.
 */
export class WaitingCall {
  readonly #handOvers: HandOvers;
  readonly #stores: readonly LockStore[];
  readonly #quorum: number;
  readonly #keys: readonly string[];
  readonly #value: string;
  readonly #ttl: number;
  readonly #timeoutMs: number;
  readonly #options: ResolvedAcquireOptions;
  #waiter: Waiter | undefined;
  /** The ticket the last attempt carried. */
  #ticket: QueueTicket | undefined;
  /** Instances where this call may sit in a queue: those that did not take the keys. */
  #queuedOn: number[] = [];
  /** When the poll that a subscription back cut short was due (`performance.now()`), until it is slept out. */
  #pollDue: number | undefined;

  /** Whether a call with `options` waits for hand-overs: it may wait, and a quorum of instances can hand keys over. */
  static mayWait(handOvers: HandOvers, options: ResolvedAcquireOptions): boolean {
    return (options.wait === undefined ? options.retryCount > 0 : options.wait > 0) && handOvers.enabled;
  }

  constructor(
    handOvers: HandOvers,
    stores: readonly LockStore[],
    quorum: number,
    request: { readonly keys: readonly string[]; readonly value: string; readonly ttl: number },
    timeoutMs: number,
    options: ResolvedAcquireOptions,
    /** Made before the call's first attempt while this Redlock listens: it queues from that attempt on. */
    queueNow: boolean,
  ) {
    this.#handOvers = handOvers;
    this.#stores = stores;
    this.#quorum = quorum;
    this.#keys = request.keys;
    this.#value = request.value;
    this.#ttl = request.ttl;
    this.#timeoutMs = timeoutMs;
    this.#options = options;
    if (queueNow) this.#enter(0);
  }

  /**
   * The queue ticket for the attempt starting at `attemptStart`: only while a quorum listens
   * (otherwise nobody could be told).
   */
  ticket(attemptStart: number): QueueTicket | undefined {
    const waiter = this.#waiter;
    if (waiter !== undefined) waiter.attempts++;
    const ticket = waiter?.offer;
    if (ticket !== undefined) {
      (waiter as Waiter).queued = true;
      waiter?.byMessage?.queued(attemptStart);
    }
    this.#ticket = ticket;
    return ticket;
  }

  /**
   * An attempt ended: it `acquired` the lock, or it failed and gives back every key it took
   * (`requeued`: queued again where it gives them back).
   */
  settled(votes: readonly Vote<AcquireReply>[], acquired: boolean, requeued = false): void {
    if (requeued) this.#queuedOn = this.#stores.map((_, index) => index);
    else if (this.#ticket !== undefined) this.#queuedOn = notTaken(votes);
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    if (acquired) waiter.acquired = true;
    // Every key the attempt took is given back, a handed one too (the release script hands it
    // to the next in line): a waiter never sits on votes another waiter needs. One that tries
    // again is queued again there first, so that it keeps its place in every queue.
    else {
      waiter.refusedBy(this.#stores.flatMap((_, index) => (isRefused(votes[index]) ? [index] : [])));
      const givenBack = this.#stores.flatMap((_, index) => (isRefused(votes[index]) ? [] : [index]));
      waiter.gaveBack(givenBack, requeued);
      // the give-back is sent next and may delete a key: a grant by a release sent before it no longer proves anything
      if (givenBack.length > 0) waiter.attempts++;
    }
  }

  /**
   * After a failed attempt: a call not yet in line enters it and subscribes. True when it should
   * try again at once, queued this time (it takes the key if the holder released it meanwhile): it
   * was refused for contention before it could queue.
   */
  async join(attempts: number, contention: boolean): Promise<boolean> {
    if (this.#waiter !== undefined) return false;
    const waiter = this.#enter(attempts);
    await this.#handOvers.listen(this.#timeoutMs);
    return contention && waiter.offer !== undefined;
  }

  /**
   * Waits for the keys to be handed over, or `ms`, whichever comes first; rejects with the
   * signal's reason. `inLine`: on how many instances the last attempt left it queued (those that
   * refused it, and those where it gave a key back). Resolves to how it woke (`Woken`): unless
   * its poll woke it (hand-overs did, a subscriber connection subscribed again, or one hold passed
   * in too short a queue), the attempt that follows is no retry, and the poll it cut short stays
   * due when it was.
   */
  sleep(ms: number, inLine: number, signal: AbortSignal | undefined): Promise<Woken> {
    const waiter = this.#waiter as Waiter;
    const now = performance.now();
    if (this.#pollDue !== undefined) ms = Math.min(ms, Math.max(0, this.#pollDue - now));
    const pollDue = now + ms;
    // queued on too few instances to be handed a quorum (some timed out): no release could wake
    // it, so it tries again after one hold. That attempt only seeks its place in line and is no
    // retry: counted, it spent a `retryCount` meant to last polls `retryDelay` apart in a few holds
    const short = this.#ticket !== undefined && inLine < this.#quorum && waiter.retryMs < ms;
    return waiter.sleep(short ? waiter.retryMs : ms, signal).then((woken) => {
      if (short && woken === "poll") woken = "again";
      this.#pollDue = woken === "poll" ? undefined : pollDue;
      return woken;
    });
  }

  /**
   * Whether the next poll would be refused by a valid lock of this Redlock on one of the keys, and
   * can be left out: the call is in line on a quorum of instances (`inLine` of them), so the release
   * of that lock grants it the keys or hands them on, and no instance handed it keys it must claim
   * or give back. What it buys: waiters of one process behind a holder of that process send
   * nothing until the holder releases (bench/: "In one process, contention", where every waiter
   * polls every 2–6 ms).
   */
  refusedHere(live: LiveLocks, keys: readonly string[], inLine: number): boolean {
    return (
      this.#ticket !== undefined && inLine >= this.#quorum && this.#waiter?.holding.size === 0 && live.holdsAnyKey(keys)
    );
  }

  /**
   * After a sleep, or once the call gives up: when a quorum of instances granted the keys to this
   * call (speed/own-grant.ts, speed/message-grant.ts), and this process heard it before `by` (the
   * call's deadline, once it gives up), the monotonic time its validity counts from. The lock is
   * then held without another attempt; `tookGrant()` records it.
   */
  grantedAt(by = Number.POSITIVE_INFINITY): number | undefined {
    const heardAt = this.#waiter?.grantsHeardAt;
    return heardAt !== undefined && heardAt < by ? this.#waiter?.grantedAt : undefined;
  }

  /** The call holds the keys it was granted: it is still queued only where they were not granted. */
  tookGrant(): void {
    const waiter = this.#waiter as Waiter;
    waiter.acquired = true;
    this.#queuedOn = this.#stores.flatMap((_, index) => (waiter.holding.has(index) ? [] : [index]));
  }

  /**
   * The call won but gives the lock back (aborted, or stopped, as it won): it leaves the queues now,
   * before its release is sent on the same connections, so that no instance can hand it a key after
   * that release (a minority holder's release would hold the key for it, with nobody to pass it on),
   * and it counts as a waiter that gave up. The release covers every key handed to it before: `end()`
   * has nothing left to do.
   */
  givesBack(): void {
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    waiter.acquired = false;
    this.#handOvers.leave(waiter, this.#queuedOn);
    this.#waiter = undefined;
  }

  /**
   * The call is over: it leaves the queues and, if it gave up, lets go of its value wherever it was
   * queued or handed a key, after the ZREM on the same connection: no hand-over to it can follow
   * that. A hand-over that came before, whose message this process has not read, would otherwise hold
   * the key for the waiter's hold (its ttl, for a grant) with nobody to pass it on whenever the
   * message is never read: quit() or the subscription's linger ending first (HandOvers.#handed).
   */
  async end(): Promise<void> {
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    const queuedOn = this.#queuedOn;
    this.#handOvers.leave(waiter, queuedOn);
    const holding = waiter.acquired ? [] : this.#stores.filter((_, i) => waiter.holding.has(i) || queuedOn.includes(i));
    if (holding.length > 0) await fanOut(holding, releaseCall, waiter, this.#timeoutMs);
  }

  #enter(attempts: number): Waiter {
    const budget = waitBudget(this.#options, attempts);
    const grantable = !this.#options.fencing;
    this.#waiter = this.#handOvers.enter(this.#keys, this.#value, this.#ttl, this.#timeoutMs, budget, grantable);
    return this.#waiter;
  }
}

/** How long a call may still wait after `attempts` attempts, at most: how long its queue entries must last. */
const waitBudget = (opts: ResolvedAcquireOptions, attempts: number) =>
  opts.wait ?? (opts.retryCount + 1 - attempts) * (opts.retryDelay + opts.retryJitter);

/** Sleeps `ms`, for a call that polls; rejects with the signal's reason when it aborts. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
