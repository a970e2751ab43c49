import { fencedAcquireCall, writeBackFences } from "../fencing/quorum-fences.js";
import type { LiveLocks } from "../lock/live-locks.js";
import { Lock, type LockOwner, LockState } from "../lock/lock.js";
import { newLockValue } from "../lock/lock-value.js";
import { type AcquireMessage, channels } from "../observe/diagnostics.js";
import type { AttemptCounter } from "../observe/tracing.js";
import {
  type AcquireOptions,
  checkOptionNames,
  driftFor,
  instanceTimeoutFor,
  OPTION_NAMES,
  type ResolvedAcquireOptions,
  resolveAcquireOptions,
} from "../options.js";
import type { Retake, RetakeCall } from "../speed/retake.js";
import type { AcquireReply, LockStore } from "../stores/store.js";
import { checkMs, checkResources, keysOf } from "../validate.js";
import type { HandOvers, Woken } from "../waiting/hand-over.js";
import { sleep, WaitingCall } from "../waiting/waiting-call.js";
import { abortable, PointEnding } from "./abortable-call.js";
import { type AcquireFailure, acquireError, isMisconfigured, quitError } from "./acquire-failure.js";
import { fanOut, type Quorum, type Vote } from "./ballot.js";
import { checkFencing } from "./instance-checks.js";
import { type AcquireRequest, acquireCall, giveBackCall, type QuorumContext, requeueCall } from "./requests.js";
import { classify, tallyAcquire } from "./votes.js";

/** A call's checked arguments (`AcquireLoop.#checked`). */
interface CheckedCall {
  readonly names: readonly string[];
  readonly keys: readonly string[];
  readonly ttl: number;
  readonly opts: ResolvedAcquireOptions;
  /** The per-instance timeout. */
  readonly timeout: number;
  readonly nullOnContention: boolean;
}

/** What the loop needs of its Redlock beyond the quorum. */
export interface AcquireParts {
  readonly owner: LockOwner;
  /**
   * Releases a lock that a call won but does not hand out (aborted, quit()), untraced and
   * unpublished: the call is traced (and published) as its failure alone, with no release (nor a
   * held duration) of a lock nobody held.
   */
  readonly giveBack: (lock: Lock) => Promise<boolean>;
  readonly handOvers: HandOvers;
  readonly live: LiveLocks;
  readonly prefix: string;
  readonly defaults: ResolvedAcquireOptions;
  /** Every instance can issue fencing tokens. */
  readonly canFence: boolean;
  /** Which locks a release may take back first (speed/retake.ts). */
  readonly retake: Retake;
}

/**
 * Steps 1–4 of the Redlock algorithm with retries: ask every instance for the keys, count the
 * votes, keep the lock if a quorum said yes with validity left, else give back what was taken and
 * try again (waiting for a hand-over, or polling) until the retries or `wait` run out.
 */
export class AcquireLoop {
  readonly #ctx: QuorumContext;
  readonly #parts: AcquireParts;
  /** The stores that must vet a lock's keys before it is attempted (Clusters). */
  readonly #keyCheckers: readonly LockStore[];
  /** An acquisition needs no more answers once a quorum said yes. */
  readonly #acquiredQuorum: Quorum<AcquireReply>;
  /** Calls past their argument checks and not yet over: quit() waits for them. */
  #running = 0;
  /** Set by quit(): running calls end, new ones are refused. */
  #quit: Promise<void> | undefined;
  /** Called when the last running call is over, while quit() waits for it. */
  #idle: (() => void) | undefined;
  /**
   * One per running call that has slept: aborted at quit(), it cuts the call's sleep short. With
   * the listener that forwards the call's own signal to it, removed when the call ends (not by
   * aborting: an abort dispatches an event and makes an AbortError, about 10 µs per call).
   */
  readonly #sleeps = new Map<AbortController, () => void>();

  constructor(ctx: QuorumContext, parts: AcquireParts) {
    this.#ctx = ctx;
    this.#parts = parts;
    this.#keyCheckers = ctx.stores.filter((store) => typeof store.checkKeys === "function");
    this.#acquiredQuorum = { need: ctx.quorum, yes: (reply) => reply.acquired };
  }

  /**
   * Resolves to `null` on contention when `nullOnContention`; rejects on every other failure, and
   * with the signal's reason as soon as `options.signal` aborts (`abortable`).
   */
  run(
    resources: string | readonly string[],
    ttl: number,
    options: AcquireOptions | undefined,
    nullOnContention: boolean,
    counter?: AttemptCounter,
  ): Promise<Lock | null> {
    // Checked before the call can be aborted: bad arguments reject as such, also when the signal
    // aborts in the same tick (the abort would otherwise reject first).
    let checked: CheckedCall;
    try {
      checked = this.#checked(resources, ttl, options, nullOnContention);
    } catch (error) {
      return Promise.reject(error);
    }
    const signal = checked.opts.signal;
    // already aborted: the call rejects at once by itself, sending nothing
    if (signal === undefined || signal.aborted) return this.#run(checked, counter);
    // its point-channel message waits until its caller is told how it ended (`abortable`)
    const ending = new PointEnding(this.#ctx.clock, counter);
    const acquiring = this.#run(checked, ending.counter, ending);
    return abortable(acquiring, signal, this.#parts.giveBack, ending);
  }

  /** The call's arguments, options and configuration checked; throws before anything is sent. */
  #checked(
    resources: string | readonly string[],
    ttl: number,
    options: AcquireOptions | undefined,
    nullOnContention: boolean,
  ): CheckedCall {
    const names = checkResources(resources);
    checkMs("ttl", ttl);
    checkOptionNames(options, OPTION_NAMES.lock, nullOnContention ? "lock()" : "acquire()");
    const opts = resolveAcquireOptions(this.#parts.defaults, options);
    const timeout = instanceTimeoutFor(ttl, opts);
    if (opts.fencing && !this.#parts.canFence) checkFencing(this.#ctx.stores);
    const keys = keysOf(this.#parts.prefix, names);
    for (const store of this.#keyCheckers) store.checkKeys?.(keys, opts.fencing);
    return { names, keys, ttl, opts, timeout, nullOnContention };
  }

  async #run(checked: CheckedCall, counter: AttemptCounter | undefined, ending?: PointEnding): Promise<Lock | null> {
    const { names, keys, ttl, opts, timeout, nullOnContention } = checked;
    const { stores, quorum, identity, clock } = this.#ctx;
    const parts = this.#parts;
    // from here on, a caller told of an abort first hears "aborted" on the point channel (PointEnding)
    ending?.began(names);
    // refused rather than sent (after quit(): a Redlock's own clients are closed, a handed Redlock
    // no longer listens), and published as any call that ends so
    if (opts.signal?.aborted || this.#quit !== undefined)
      throw this.#stopped(names, opts.signal, 0, this.#ctx.clock(), ending);
    const fencing = opts.fencing;

    // a release of one of the keys by this Redlock still on its way may reserve it for this call
    // (an unlock() not awaited): its answer first, or this attempt would follow it and be refused.
    // Counted as running from that wait on: quit() waits for the call (after quit() it ends at its
    // first attempt, which is not sent) rather than resolve while the call still waits.
    let counted = false;
    for (let settling = parts.retake.settling(keys); settling !== undefined; settling = parts.retake.settling(keys)) {
      if (!counted) this.#running++;
      counted = true;
      await settling;
    }
    const drift = driftFor(ttl, opts.driftFactor);
    const start = clock();
    const retaking = parts.retake.acquiring(keys, ttl, fencing ? undefined : start + drift);
    const reserved = retaking?.reservation;
    if (reserved !== undefined) {
      // a quorum of instances set the key to this value for this call when this Redlock released it (speed/retake.ts)
      const state = new LockState(keys, reserved.value, timeout, clock);
      state.ttl = ttl;
      state.driftFactor = opts.driftFactor;
      state.validUntil = reserved.start + ttl - drift;
      state.expiresAt = reserved.wallStart + ttl - drift;
      if (counter !== undefined) counter.attempts = 1;
      // no quit() came since it waited (quit() lets every reservation go): counted no longer
      if (counted && --this.#running === 0) this.#idle?.();
      return this.#acquired(names, state, retaking, undefined, opts.signal, 1, start, undefined, ending);
    }
    const value = newLockValue();
    const request: AcquireRequest = { keys, value, ttl, ticket: undefined, sent: 0, budgetMs: timeout };
    const deadline = opts.wait === undefined ? Number.POSITIVE_INFINITY : start + opts.wait;
    const maxAttempts = opts.wait === undefined ? opts.retryCount + 1 : Number.POSITIVE_INFINITY;
    const call = fencing ? fencedAcquireCall : acquireCall;
    const handOvers = parts.handOvers;
    const mayWait = WaitingCall.mayWait(handOvers, opts);
    // Made before the first attempt only when this Redlock listens (the call then queues from that
    // attempt on); otherwise once an attempt failed: most calls acquire at once, and need none.
    let waiting =
      mayWait && handOvers.listening
        ? new WaitingCall(handOvers, stores, quorum, request, timeout, opts, true)
        : undefined;
    let attempts = 0;
    // assigned by the first attempt, which is always sent
    let failure!: AcquireFailure;
    /** Instances where the last attempt left the call in line: they refused it, or took keys it gave back. */
    let inLine = 0;
    /** The call's sleeps' signal: its own signal or quit() aborts it (`#sleepSignal`). */
    let cut: AbortController | undefined;
    /** Set when a quorum of instances granted the call the keys (speed/own-grant.ts, speed/message-grant.ts). */
    let grantedAt: number | undefined;
    /** The call gave up with grants that would leave less than half its ttl, and claims them (its last attempt). */
    let claimedLast = false;
    if (!counted) this.#running++;
    try {
      // `skipping`: a poll that a valid lock of this Redlock would refuse is not sent; it counts as
      // that refusal (WaitingCall.refusedHere)
      for (let skipping = false; ; ) {
        attempts++;
        if (counter !== undefined) counter.attempts = attempts;
        if (!skipping) {
          const attemptStart = clock();
          const wallStart = Date.now();
          request.ticket = waiting?.ticket(attemptStart);
          const stamp = identity.stamp;
          const voters = identity.current ? stores : await identity.voters(stores, timeout);
          // aborted or quit() during the identity check (new connections, a reconnect), or quit() as a
          // sleep ended: nothing more is sent, or the keys would be held, refusing others, until given back
          if (opts.signal?.aborted || this.#quit !== undefined)
            throw this.#stopped(names, opts.signal, attempts, start, ending);
          request.sent++;
          let votes = await fanOut(voters, call, request, timeout, this.#acquiredQuorum);
          if (identity.changedSince(stamp)) votes = await identity.voided(votes, stamp, timeout);
          // Validity counts from this attempt's start on a monotonic clock: time spent waiting for
          // replies (a pause, a slow instance) is time the other keys were already expiring.
          let validity = ttl - (clock() - attemptStart) - drift;
          const tally = tallyAcquire(votes);
          inLine = tally.held + tally.yes;
          let fences: readonly string[] | undefined;
          let unconfirmed: AcquireFailure | undefined;
          if (fencing && tally.yes >= quorum && validity > 0) {
            // phase 2 (docs/fencing.md): no lock unless a quorum still held it and raised its counters
            const writeBack = await writeBackFences(voters, request, votes, timeout, quorum, (confirmations) =>
              identity.changedSince(stamp) ? identity.voided(confirmations, stamp, timeout) : confirmations,
            );
            validity = ttl - (clock() - attemptStart) - drift;
            fences = writeBack.fences;
            if (writeBack.fences === undefined) unconfirmed = writeBack.failure;
          }
          if (tally.yes >= quorum && validity > 0 && unconfirmed === undefined) {
            waiting?.settled(votes, true);
            const state = new LockState(keys, value, timeout, clock);
            state.ttl = ttl;
            state.driftFactor = opts.driftFactor;
            state.validUntil = attemptStart + ttl - drift;
            state.expiresAt = wallStart + ttl - drift;
            const lock = this.#acquired(names, state, retaking, fences, opts.signal, attempts, start, waiting, ending);
            return lock instanceof Promise ? await lock : lock;
          }
          failure = unconfirmed ?? classify(tally, votes, value, quorum, validity);
          const last =
            attempts >= maxAttempts ||
            isMisconfigured(failure) ||
            clock() >= deadline ||
            opts.signal?.aborted === true ||
            this.#quit !== undefined;
          // A waiter that tries again is queued again where it gives keys back, keeping its place.
          const requeue = !last && request.ticket !== undefined;
          waiting?.settled(votes, false, requeue);
          await this.#releaseAfterFailure(voters, votes, request, timeout, requeue);
        }
        if (opts.signal?.aborted || this.#quit !== undefined)
          throw this.#stopped(names, opts.signal, attempts, start, ending);
        if (
          attempts >= maxAttempts ||
          isMisconfigured(failure) ||
          (deadline !== Number.POSITIVE_INFINITY && clock() >= deadline)
        ) {
          // Grants heard before the deadline that would leave less than half the ttl are claimed by
          // one attempt more, whatever the deadline, as after a sleep (docs/waiting.md, "Grants
          // during the last attempt"): taken, the lock would start with less than half its ttl.
          const at = claimedLast || isMisconfigured(failure) ? undefined : waiting?.grantedAt(deadline);
          if (at === undefined || ttl - (clock() - at) - drift > ttl / 2) break;
          claimedLast = true;
          skipping = false;
          continue;
        }
        if (mayWait) waiting ??= new WaitingCall(handOvers, stores, quorum, request, timeout, opts, false);
        const again = waiting !== undefined && (await waiting.join(attempts, failure.kind === "contention"));
        let delay = pollDelay(opts);
        if (deadline !== Number.POSITIVE_INFINITY) {
          // checked again: joining waits for SUBSCRIBE replies, up to the per-instance timeout
          const left = deadline - clock();
          if (left <= 0) break;
          delay = Math.min(delay, Math.ceil(left));
        }
        // joining waits for SUBSCRIBE replies, up to the per-instance timeout
        if (opts.signal?.aborted || this.#quit !== undefined)
          throw this.#stopped(names, opts.signal, attempts, start, ending);
        // Not counted: it is the same attempt, now in line.
        if (again) {
          attempts--;
          continue;
        }
        cut ??= this.#sleepSignal(opts.signal);
        /** How the sleep ended (WaitingCall.sleep): a poll, hand-overs, or a subscription back. */
        let woken: Woken = "poll";
        try {
          if (waiting === undefined) await sleep(delay, cut.signal);
          else woken = await waiting.sleep(delay, inLine, cut.signal);
        } catch {
          throw this.#stopped(names, opts.signal, attempts, start, ending);
        }
        // a quorum granted the key outright (taken below), unless the call waited in line for so long
        // that less than half its ttl would be left, counted from its first queued attempt: it claims
        // the keys handed to it then, for a whole ttl from the claim (a handler would otherwise start
        // on a lock about to lapse before its first renewal: docs/waiting.md, "Grant by message")
        grantedAt = waiting?.grantedAt();
        if (grantedAt !== undefined && ttl - (clock() - grantedAt) - drift > ttl / 2) break;
        grantedAt = undefined;
        // Only a poll is a retry: an attempt hand-overs woke earlier comes as often as others release
        // or give keys back (behind a lock left on two of three instances, another waiter's every
        // poll hands the oldest the free key), and would spend a `retryCount` meant to last its
        // polls. The attempt for a subscription back takes the call's place in line again where a
        // release may have skipped it, and is sent even behind a lock of this Redlock.
        if (woken !== "poll") attempts--;
        skipping = woken !== "again" && waiting?.refusedHere(parts.live, keys, inLine) === true;
      }
      // Granted the keys as it slept, or it gives up: then grants heard before its deadline, as its
      // last attempt was on its way (refused: it ran before the releases), are its lock too. Heard
      // later, they are let go by `end()`, as for any call that gave up.
      // (none after a claim of them that failed)
      if (!claimedLast) grantedAt ??= waiting?.grantedAt(deadline);
      if (grantedAt !== undefined && ttl - (clock() - grantedAt) - drift > 0) {
        // no claim needed: the validity counts from the grants (speed/own-grant.ts, speed/message-grant.ts)
        waiting?.tookGrant();
        const state = new LockState(keys, value, timeout, clock);
        state.ttl = ttl;
        state.driftFactor = opts.driftFactor;
        state.validUntil = grantedAt + ttl - drift;
        state.expiresAt = Date.now() - (clock() - grantedAt) + ttl - drift;
        const lock = this.#acquired(names, state, retaking, undefined, opts.signal, attempts, start, waiting, ending);
        return lock instanceof Promise ? await lock : lock;
      }
    } finally {
      // not `await waiting?.end()`: awaiting undefined would cost every acquisition a turn of the microtask queue
      if (waiting !== undefined) await waiting.end();
      if (cut !== undefined) {
        const forward = this.#sleeps.get(cut) as () => void;
        this.#sleeps.delete(cut);
        opts.signal?.removeEventListener("abort", forward);
      }
      if (--this.#running === 0) this.#idle?.();
    }
    this.#publish(names, failure.kind, attempts, start, ending);
    if (failure.kind === "contention" && nullOnContention) return null;
    throw acquireError(names, failure, ttl);
  }

  /**
   * `Redlock.stopAcquiring()`, the first step of `quit()`: refuses new calls and ends the running
   * ones, which give back what they took while the connections are still open (an attempt in
   * flight is released once it answered) and reject with `quitError`. Resolves once no call runs,
   * or after `boundMs` (a dead instance must not make quit() hang).
   */
  quit(boundMs: number): Promise<void> {
    if (this.#quit !== undefined) return this.#quit;
    for (const cut of this.#sleeps.keys()) cut.abort();
    this.#quit =
      this.#running === 0
        ? Promise.resolve()
        : new Promise((resolve) => {
            const timer = setTimeout(resolve, boundMs);
            this.#idle = () => {
              clearTimeout(timer);
              resolve();
            };
          });
    return this.#quit;
  }

  /** A signal for a call's sleeps that aborts with the call's own `signal` or at quit(); made at its first sleep. */
  #sleepSignal(signal: AbortSignal | undefined): AbortController {
    const cut = new AbortController();
    const forward = () => cut.abort();
    signal?.addEventListener("abort", forward, { once: true });
    this.#sleeps.set(cut, forward);
    return cut;
  }

  /** The call ends without a lock: what it rejects with, its signal's reason or, after quit(), `quitError`. */
  #stopped(
    names: readonly string[],
    signal: AbortSignal | undefined,
    attempts: number,
    start: number,
    ending: PointEnding | undefined,
  ): unknown {
    if (signal?.aborted) {
      this.#publish(names, "aborted", attempts, start, ending);
      return signal.reason;
    }
    this.#publish(names, "unavailable", attempts, start, ending);
    return quitError(names);
  }

  /**
   * The lock is held on a quorum with validity left: hands it out, or, if the call was aborted or
   * quit() came meanwhile, a promise that releases it and rejects (no promise on the
   * common path: this runs once per lock); a `waiting` call leaves its queues before that release
   * (WaitingCall.givesBack). A call that followed this Redlock's release of the key
   * (`retaking`) continues that release's run of retakes, or begins one now (speed/retake.ts).
   */
  #acquired(
    names: readonly string[],
    state: LockState,
    retaking: RetakeCall | undefined,
    fences: readonly string[] | undefined,
    signal: AbortSignal | undefined,
    attempts: number,
    start: number,
    waiting: WaitingCall | undefined,
    ending: PointEnding | undefined,
  ): Lock | Promise<never> {
    const parts = this.#parts;
    state.acquiredAt = this.#ctx.clock();
    // a fenced lock is no looper: its release reserves nothing, since no fenced call can hold a
    // reservation (a fenced acquisition runs its script), and letting it go cost a command and kept
    // the key held, refusing others, to the end of the turn
    state.streakStart = retaking && fences === undefined ? (retaking.streakStart ?? state.acquiredAt) : undefined;
    const lock = new Lock(parts.owner, names, state.value, state, fences);
    if (signal?.aborted || this.#quit !== undefined) {
      waiting?.givesBack();
      return parts.giveBack(lock).then(() => {
        throw this.#stopped(names, signal, attempts, start, ending);
      });
    }
    parts.live.add(lock);
    this.#publish(names, "acquired", attempts, start, ending);
    return lock;
  }

  /**
   * Step 4: release wherever our value may have landed: instances that said yes, timed out or
   * failed. With `requeue`, the waiter is queued again there before the key is handed on. An
   * instance that the identity check stood in for (`voters`: not yet identified, a replica) was
   * sent nothing: it has nothing to give back.
   */
  async #releaseAfterFailure(
    voters: readonly LockStore[],
    votes: readonly Vote<AcquireReply>[],
    request: AcquireRequest,
    timeout: number,
    requeue: boolean,
  ) {
    const stores = this.#ctx.stores.filter((store, i) => {
      const vote = votes[i];
      return vote !== undefined && voters[i] === store && (!vote.ok || vote.value.acquired);
    });
    if (stores.length > 0) await fanOut(stores, requeue ? requeueCall : giveBackCall, request, timeout);
  }

  /** A call with a signal leaves its message to `ending`: an abort may yet decide how it ends for its caller. */
  #publish(
    resources: readonly string[],
    outcome: AcquireMessage["outcome"],
    attempts: number,
    start: number,
    ending: PointEnding | undefined,
  ) {
    if (channels.acquire.hasSubscribers) {
      const message: AcquireMessage = { resources, outcome, attempts, elapsedMs: this.#ctx.clock() - start };
      if (ending === undefined) channels.acquire.publish(message);
      else ending.message = message;
    }
  }
}

/** The delay before the next try: `retryDelay` plus up to `retryJitter` ms. */
const pollDelay = (opts: ResolvedAcquireOptions) =>
  opts.retryDelay + Math.floor(Math.random() * (opts.retryJitter + 1));
