import { performance } from "node:perf_hooks";
import { acquireError, isMisconfigured } from "./acquire-failure.js";
import { autoExtend } from "./auto-extend.js";
import { type AcquireMessage, channels } from "./diagnostics.js";
import { type InstanceFailure, LockLostError, LockUnavailableError } from "./errors.js";
import { failuresOf, fanOut, type Quorum, type Vote } from "./fan-out.js";
import { fencedAcquireCall, writeBackFences } from "./fencing.js";
import { HandOvers, type Waiter } from "./hand-over.js";
import { type ForcedRelease, type InspectOptions, Inspector, type LockInspection } from "./inspect.js";
import { instanceIdentity, type RedlockInstance, type ResolvedInstance, resolveInstance } from "./instances.js";
import { LiveLocks } from "./live-locks.js";
import { armValidityTimer, Lock, LockState, markLost, markReleased, STATE } from "./lock.js";
import { newLockValue } from "./lock-value.js";
import {
  type AcquireOptions,
  checkOptionsObject,
  DEFAULT_ACQUIRE,
  DEFAULT_HOLD,
  driftFor,
  type HoldOptions,
  instanceTimeoutFor,
  type RedlockOptions,
  type ResolvedAcquireOptions,
  type ResolvedHoldOptions,
  resolveAcquireOptions,
  resolveHoldOptions,
  resolveKeyPrefix,
} from "./options.js";
import { RedisStore } from "./redis-store.js";
import { ServerIdentityCheck } from "./server-identity.js";
import { type AcquireReply, canFence, type LockStore, type QueueTicket } from "./store.js";
import { NodeRedisStore } from "./stores/node-redis/node-redis-store.js";
import {
  type AttemptCounter,
  traceAcquire,
  traceExtend,
  traceRelease,
  traceUsing,
  tracingChannels,
} from "./tracing.js";
import { checkFunction, checkMs, checkResources } from "./validate.js";

/** Why an acquisition failed: someone else holds it, or no quorum could be asked. */
type Failure =
  | { readonly kind: "contention"; readonly retryAfterMs: number }
  | { readonly kind: "unavailable"; readonly causes: InstanceFailure[]; readonly message?: string };

/** Options of `using()`: one acquisition plus auto-extension. */
export type UsingOptions = AcquireOptions & HoldOptions;

/**
 * The Redlock algorithm over N independent instances: a lock is held when a quorum
 * (⌊N/2⌋+1) of them took it with validity left.
 *
 * @example
 * const dlm = new Redlock([new Redis(6379), new Redis(6380), new Redis(6381)]);
 * const lock = await dlm.lock("resource_name", 1000);
 * if (lock) {
 *   try { if (lock.valid) { ... } } finally { await dlm.unlock(lock); }
 * }
 */
export class Redlock {
  /** How many instances must agree: ⌊N/2⌋+1. */
  readonly quorum: number;
  readonly #instances: readonly ResolvedInstance[];
  readonly #stores: readonly LockStore[];
  /** The stores that must vet a lock's keys before it is attempted (Clusters). */
  readonly #keyCheckers: readonly LockStore[];
  /** Every instance can issue fencing tokens. */
  readonly #canFence: boolean;
  readonly #handOvers: HandOvers;
  readonly #identity: ServerIdentityCheck;
  readonly #live = new LiveLocks();
  readonly #inspector: Inspector;
  /** An acquisition needs no more answers once a quorum said yes. */
  readonly #acquiredQuorum: Quorum<AcquireReply>;
  readonly #defaults: ResolvedAcquireOptions;
  readonly #hold: ResolvedHoldOptions;
  readonly #prefix: string;
  readonly #clock: () => number;

  constructor(instances: readonly RedlockInstance[], options?: RedlockOptions) {
    if (!Array.isArray(instances) || instances.length === 0) {
      throw new TypeError("instances must be a non-empty array of clients, options, URLs or stores");
    }
    checkOptionsObject("options", options);
    this.#defaults = resolveAcquireOptions(DEFAULT_ACQUIRE, options);
    this.#hold = resolveHoldOptions(DEFAULT_HOLD, options);
    this.#prefix = resolveKeyPrefix(options);
    const clock = options && Object.hasOwn(options, "clock") ? options.clock : undefined;
    this.#clock = clock === undefined ? () => performance.now() : checkFunction<() => number>("options.clock", clock);
    // Check for duplicates before creating any client, so a bad list leaks no connection.
    const seen = new Map<unknown, number>();
    instances.forEach((instance, index) => {
      const first = seen.get(instance);
      if (first !== undefined && typeof instance === "object") {
        throw new TypeError(`instances[${index}] is the same object as instances[${first}]: it would vote twice`);
      }
      seen.set(instance, index);
    });
    const resolved: ResolvedInstance[] = [];
    try {
      for (const [index, instance] of instances.entries()) resolved.push(resolveInstance(instance, index));
      checkDistinct(resolved);
      if (this.#defaults.fencing) checkFencing(resolved.map((instance) => instance.store));
    } catch (error) {
      for (const { owned } of resolved) owned?.disconnect();
      throw error;
    }
    this.#instances = resolved;
    this.#identity = new ServerIdentityCheck(resolved);
    this.#stores = resolved.map((instance) => instance.store);
    this.#keyCheckers = this.#stores.filter((store) => typeof store.checkKeys === "function");
    this.#canFence = this.#stores.every(canFence);
    this.quorum = Math.floor(resolved.length / 2) + 1;
    this.#handOvers = new HandOvers(this.#stores, this.quorum);
    this.#acquiredQuorum = { need: this.quorum, yes: (reply) => reply.acquired };
    this.#inspector = new Inspector(
      this.#stores,
      this.quorum,
      this.#prefix,
      this.#live,
      this.#defaults.instanceTimeout,
    );
  }

  /** The instances' stores, in the order given. */
  get stores(): readonly LockStore[] {
    return this.#stores;
  }

  /** The key prefix put before every resource name. */
  get keyPrefix(): string {
    return this.#prefix;
  }

  /**
   * Locks `resources` (all or none) for `ttl` ms. Resolves to the `Lock`, or `null` when others still
   * hold it after the retries (or `wait`). Rejects with `LockUnavailableError` when no quorum could be
   * asked, with `TypeError`/`RangeError` on bad arguments, and with the signal's reason when aborted.
   */
  lock(resources: string | readonly string[], ttl: number, options?: AcquireOptions): Promise<Lock | null> {
    if (!tracingChannels.acquire.hasSubscribers) return this.#acquire(resources, ttl, options, true);
    const n = this.#stores.length;
    return traceAcquire(resources, ttl, n, options, (counter) => this.#acquire(resources, ttl, options, true, counter));
  }

  /** Like `lock()`, but rejects with `LockContentionError` (carrying `retryAfterMs`) instead of resolving to `null`. */
  acquire(resources: string | readonly string[], ttl: number, options?: AcquireOptions): Promise<Lock> {
    if (!tracingChannels.acquire.hasSubscribers) return this.#acquire(resources, ttl, options, false) as Promise<Lock>;
    const n = this.#stores.length;
    const call = (counter: AttemptCounter) => this.#acquire(resources, ttl, options, false, counter);
    return traceAcquire(resources, ttl, n, options, call) as Promise<Lock>;
  }

  /**
   * Releases the lock on every instance (compare-and-delete: another owner's key is never touched).
   * Resolves to `true` as soon as a quorum deleted it (the release still reaches the other
   * instances), `false` if it had expired, been taken or was already released. Never rejects
   * because of the lock's state, and never waits on a dead instance longer than the per-instance
   * timeout.
   */
  unlock(lock: Lock): Promise<boolean> {
    if (!tracingChannels.release.hasSubscribers) return this.#unlock(lock);
    return traceRelease(lock, this.#stores.length, this.#live, () => this.#unlock(lock));
  }

  #unlock(lock: Lock): Promise<boolean> {
    if (!isLock(lock)) return Promise.reject(notALock());
    if (!markReleased(lock)) return Promise.resolve(false);
    this.#live.delete(lock);
    const state = lock[STATE];
    const start = this.#clock();
    const quorum: Quorum<number> = { need: this.quorum, yes: (deleted) => deleted === state.keys.length };
    // Resolves once a quorum deleted the keys; the other instances' commands are already on their way.
    return fanOut(this.#stores, releaseCall, state, state.instanceTimeout, quorum).then((votes) =>
      this.#released(lock, countVotes(votes, quorum.yes) >= this.quorum, start),
    );
  }

  #released(lock: Lock, released: boolean, start: number): boolean {
    if (channels.release.hasSubscribers) {
      channels.release.publish({ resources: lock.resources, released, elapsedMs: this.#clock() - start });
    }
    return released;
  }

  /**
   * Resets the lock's expiry to `ttl` ms from now on a quorum, updates `lock` and resolves to it.
   * Rejects with `LockLostError` (and aborts `lock.signal`) when the lock is no longer held on a
   * quorum, its validity already ended, or it was released. Rejects with `LockUnavailableError`,
   * leaving the lock valid until its current validity ends, when too few instances answered to
   * tell: the extension may be tried again.
   */
  extend(lock: Lock, ttl: number): Promise<Lock> {
    if (!tracingChannels.extend.hasSubscribers) return this.#extend(lock, ttl);
    return traceExtend(lock, ttl, this.#stores.length, () => this.#extend(lock, ttl));
  }

  async #extend(lock: Lock, ttl: number): Promise<Lock> {
    this.#checkLock(lock);
    checkMs("ttl", ttl);
    const state = lock[STATE];
    if (state.released) throw new LockLostError(lock.resources, "Lock was already released");
    if (!lock.valid) {
      const error = state.lost ?? new LockLostError(lock.resources, "Lock validity ended before the extension");
      markLost(lock, error);
      throw error;
    }
    const drift = driftFor(ttl, this.#defaults.driftFactor);
    const start = this.#clock();
    const wallStart = Date.now();
    const request: LockRequest = { keys: state.keys, value: lock.value, ttl };
    const voters = this.#identity.current
      ? this.#stores
      : await this.#identity.voters(this.#stores, state.instanceTimeout);
    const votes = await fanOut(voters, extendCall, request, state.instanceTimeout, {
      need: this.quorum,
      yes: (extended) => extended,
    });
    const elapsed = this.#clock() - start;
    const yes = countVotes(votes, (extended) => extended);
    const refused = countVotes(votes, (extended) => !extended);
    const extended = yes >= this.quorum && ttl - elapsed - drift > 0 && !state.released;
    if (channels.extend.hasSubscribers) {
      channels.extend.publish({ resources: lock.resources, extended, elapsedMs: elapsed });
    }
    if (extended) {
      state.validUntil = start + ttl - drift;
      state.expiresAt = wallStart + ttl - drift;
      armValidityTimer(lock);
      return lock;
    }
    const causes = failuresOf(votes, lock.value);
    // Too few answers to know: the keys may still be ours on a quorum. The lock stays valid until
    // its current validity ends, and the caller may try again before then.
    if (yes < this.quorum && this.#stores.length - refused >= this.quorum && lock.valid) {
      throw new LockUnavailableError(
        lock.resources,
        causes,
        `Lock could not be extended: too few instances answered (${yes} of ${this.#stores.length} confirmed, ${this.quorum} needed)`,
      );
    }
    const error = new LockLostError(
      lock.resources,
      `Lock could not be extended on a quorum (${yes} of ${this.#stores.length} instances, ${this.quorum} needed)`,
      causes.length > 0 ? { cause: new LockUnavailableError(lock.resources, causes) } : undefined,
    );
    markLost(lock, error);
    throw error;
  }

  /**
   * Acquires, runs `fn`, extends the lock automatically while `fn` runs (up to `maxHoldMs`), and
   * releases in `finally`. Resolves to `fn`'s result. `signal` aborts with `LockLostError` if an
   * extension fails or the validity ends; `fn` should stop its work when it does.
   *
   * @example
   * await dlm.using(["account:1", "account:2"], 5000, async (signal) => {
   *   await transfer(signal);
   * });
   */
  using<T>(
    resources: string | readonly string[],
    ttl: number,
    fn: (signal: AbortSignal, lock: Lock) => T | Promise<T>,
    options?: UsingOptions,
  ): Promise<T> {
    if (!tracingChannels.using.hasSubscribers) return this.#using(resources, ttl, fn, options);
    const n = this.#stores.length;
    return traceUsing(resources, ttl, n, fn, options, (observed) => this.#using(resources, ttl, observed, options));
  }

  async #using<T>(
    resources: string | readonly string[],
    ttl: number,
    fn: (signal: AbortSignal, lock: Lock) => T | Promise<T>,
    options?: UsingOptions,
  ): Promise<T> {
    checkFunction("fn", fn);
    const hold = resolveHoldOptions(this.#hold, options);
    const lock = await this.acquire(resources, ttl, options);
    const stop = autoExtend(this, lock, ttl, hold);
    try {
      return await fn(lock.signal, lock);
    } finally {
      stop();
      await this.unlock(lock);
    }
  }

  /** The hold options (extendThreshold, maxHoldMs) this Redlock was built with, merged with `options`. */
  resolveHoldOptions(options?: HoldOptions): ResolvedHoldOptions {
    return resolveHoldOptions(this.#hold, options);
  }

  /**
   * What each instance holds under `resource`'s key (held or free, remaining ttl, whether the holder
   * is a lock of this Redlock) and the quorum's verdict: held, free, or unknown when too few
   * instances answered. Read-only: one round trip per instance, each bounded by `instanceTimeout`.
   *
   * @example
   * const { state, ttlMs, ours } = await dlm.inspect("order:42"); // "held", 4210, false
   */
  inspect(resource: string, options?: InspectOptions): Promise<LockInspection> {
    return this.#inspector.inspect(resource, options);
  }

  /** Whether one holder has `resource` on a quorum; rejects with `LockUnavailableError` when too few instances answered to tell. */
  isLocked(resource: string, options?: InspectOptions): Promise<boolean> {
    return this.#inspector.isLocked(resource, options);
  }

  /**
   * **Unsafe, for operators.** Deletes `resource`'s key on every instance whatever its value: a
   * holder that is still running keeps writing without the lock while a new owner takes it. Meant
   * for a lock left by a crashed process that you cannot wait out. The library never calls it.
   */
  forceRelease(resource: string, options?: InspectOptions): Promise<ForcedRelease> {
    return this.#inspector.forceRelease(resource, options);
  }

  /** Closes the clients this Redlock created from options or URLs; clients and stores it was handed stay open. */
  async quit(): Promise<void> {
    this.#handOvers.close();
    for (const store of this.#stores) if (store instanceof RedisStore || store instanceof NodeRedisStore) store.close();
    await Promise.all(
      this.#instances.map(async ({ owned }) => {
        if (!owned || owned.status === "end") return;
        const ended = new Promise((resolve) => owned.once("end", resolve));
        // QUIT lets pending replies arrive; a dead instance must not make quit() hang, hence the bound.
        const bound = new Promise((resolve) => setTimeout(resolve, 1000).unref());
        await Promise.race([owned.quit().catch(() => {}), bound]);
        owned.disconnect();
        await Promise.race([ended, bound]);
      }),
    );
  }

  /** Steps 1–4 with retries. Resolves to `null` on contention when `nullOnContention`; rejects on every other failure. */
  async #acquire(
    resources: string | readonly string[],
    ttl: number,
    options: AcquireOptions | undefined,
    nullOnContention: boolean,
    counter?: AttemptCounter,
  ): Promise<Lock | null> {
    const names = checkResources(resources);
    checkMs("ttl", ttl);
    const opts = resolveAcquireOptions(this.#defaults, options);
    const timeout = instanceTimeoutFor(ttl, opts);
    opts.signal?.throwIfAborted();
    const fencing = opts.fencing;
    if (fencing && !this.#canFence) checkFencing(this.#stores);

    const prefix = this.#prefix;
    const keys = prefix === "" ? names : names.map((name) => prefix + name);
    for (const store of this.#keyCheckers) store.checkKeys?.(keys, fencing);
    const value = newLockValue();
    const request: AcquireRequest = { keys, value, ttl, ticket: undefined };
    const drift = driftFor(ttl, opts.driftFactor);
    const clock = this.#clock;
    const start = clock();
    const deadline = opts.wait === undefined ? Number.POSITIVE_INFINITY : start + opts.wait;
    const maxAttempts = opts.wait === undefined ? opts.retryCount + 1 : Number.POSITIVE_INFINITY;
    const call = fencing ? fencedAcquireCall : acquireCall;
    const handOvers = this.#handOvers;
    // A call that may wait queues itself from its first attempt when this Redlock already listens.
    const mayWait = (opts.wait === undefined ? opts.retryCount > 0 : opts.wait > 0) && handOvers.enabled;
    let waiter: Waiter | undefined;
    if (mayWait && handOvers.listening) waiter = handOvers.enter(keys, value, ttl, timeout, waitBudget(opts, 0));
    /** Instances where this call may sit in a queue: those that did not take the keys. */
    let queuedOn: number[] = [];
    let attempts = 0;
    let failure: Failure;
    try {
      for (;;) {
        attempts++;
        if (counter !== undefined) counter.attempts = attempts;
        const attemptStart = clock();
        const wallStart = Date.now();
        request.ticket = waiter?.offer;
        if (request.ticket !== undefined) (waiter as Waiter).queued = true;
        const voters = this.#identity.current ? this.#stores : await this.#identity.voters(this.#stores, timeout);
        const votes = await fanOut(voters, call, request, timeout, this.#acquiredQuorum);
        // Validity counts from this attempt's start on a monotonic clock: time spent waiting for
        // replies (a pause, a slow instance) is time the other keys were already expiring.
        let validity = ttl - (clock() - attemptStart) - drift;
        const tally = tallyAcquire(votes);
        if (request.ticket !== undefined) queuedOn = notTaken(votes);
        let fences: readonly string[] | undefined;
        let unconfirmed: Failure | undefined;
        if (fencing && tally.yes >= this.quorum && validity > 0) {
          // phase 2 (docs/fencing.md): no lock unless a quorum still held it and raised its counters
          const writeBack = await writeBackFences(this.#stores, request, votes, timeout, this.quorum);
          validity = ttl - (clock() - attemptStart) - drift;
          fences = writeBack.fences;
          if (writeBack.fences === undefined) {
            unconfirmed = { kind: "unavailable", causes: writeBack.causes, message: writeBack.message };
          }
        }
        if (tally.yes >= this.quorum && validity > 0 && unconfirmed === undefined) {
          const state = new LockState(keys, value, timeout, clock);
          state.validUntil = attemptStart + ttl - drift;
          state.expiresAt = wallStart + ttl - drift;
          const lock = new Lock(this, names, value, state, fences);
          if (waiter !== undefined) waiter.acquired = true;
          if (opts.signal?.aborted) {
            await this.unlock(lock);
            this.#publishAcquire(names, "aborted", attempts, start);
            throw opts.signal.reason;
          }
          this.#live.add(lock);
          this.#publishAcquire(names, "acquired", attempts, start);
          return lock;
        }
        failure = unconfirmed ?? classify(tally, votes, value, this.quorum, validity);
        const last =
          attempts >= maxAttempts || isMisconfigured(failure) || clock() >= deadline || opts.signal?.aborted === true;
        // Every key the attempt took is given back, a handed one too (the release script hands it
        // to the next in line): a waiter never sits on votes another waiter needs. One that tries
        // again is queued again there first, so that it keeps its place in every queue.
        waiter?.keepOnly((index) => isRefused(votes[index]));
        const requeue = !last && request.ticket !== undefined;
        await this.#releaseAfterFailure(votes, request, timeout, requeue);
        if (requeue) queuedOn = this.#stores.map((_, index) => index);
        if (opts.signal?.aborted) {
          this.#publishAcquire(names, "aborted", attempts, start);
          throw opts.signal.reason;
        }
        if (attempts >= maxAttempts || isMisconfigured(failure)) break;
        let delay = pollDelay(opts);
        if (deadline !== Number.POSITIVE_INFINITY) {
          const left = deadline - clock();
          if (left <= 0) break;
          delay = Math.min(delay, Math.ceil(left));
        }
        // queued on too few instances to be handed a quorum (where it was refused, or gave a key
        // back; some timed out): no release could wake it, so it tries again after one hold
        if (waiter !== undefined && request.ticket !== undefined && tally.held + tally.yes < this.quorum) {
          delay = Math.min(delay, waiter.ticket.holdMs);
        }
        if (mayWait && waiter === undefined) {
          waiter = handOvers.enter(keys, value, ttl, timeout, waitBudget(opts, attempts));
          await handOvers.listen(timeout);
          // Refused before it could queue: try again at once, queued this time (it takes the key if
          // the holder released it meanwhile). Not counted: it is the same attempt, now in line.
          if (failure.kind === "contention" && waiter.offer !== undefined) {
            attempts--;
            continue;
          }
        }
        try {
          // Wait for the keys to be handed over, or the poll delay, whichever comes first.
          await (waiter ? waiter.sleep(delay, opts.signal) : sleep(delay, opts.signal));
        } catch (reason) {
          this.#publishAcquire(names, "aborted", attempts, start);
          throw reason;
        }
      }
    } finally {
      if (waiter !== undefined) {
        handOvers.leave(waiter, queuedOn);
        // a waiter that gives up lets go of the keys handed to it
        const holding = waiter.acquired ? [] : this.#stores.filter((_, i) => waiter?.holding.has(i));
        if (holding.length > 0) await fanOut(holding, releaseCall, request, timeout);
      }
    }
    this.#publishAcquire(names, failure.kind, attempts, start);
    if (failure.kind === "contention" && nullOnContention) return null;
    throw acquireError(names, failure, ttl);
  }

  /**
   * Step 4: release wherever our value may have landed: instances that said yes, timed out or
   * failed. With `requeue`, the waiter is queued again there before the key is handed on.
   */
  async #releaseAfterFailure(
    votes: readonly Vote<AcquireReply>[],
    request: AcquireRequest,
    timeout: number,
    requeue: boolean,
  ): Promise<void> {
    const stores = this.#stores.filter((_, i) => {
      const vote = votes[i];
      return vote !== undefined && (!vote.ok || vote.value.acquired);
    });
    if (stores.length > 0) await fanOut(stores, requeue ? giveBackCall : releaseCall, request, timeout);
  }

  #checkLock(lock: Lock): void {
    if (!isLock(lock)) throw notALock();
  }

  #publishAcquire(resources: readonly string[], outcome: AcquireMessage["outcome"], attempts: number, start: number) {
    if (channels.acquire.hasSubscribers) {
      const message: AcquireMessage = { resources, outcome, attempts, elapsedMs: this.#clock() - start };
      channels.acquire.publish(message);
    }
  }
}

interface AcquireTally {
  yes: number;
  held: number;
  retryAfterMs: number;
}

function tallyAcquire(votes: readonly Vote<AcquireReply>[]): AcquireTally {
  const tally: AcquireTally = { yes: 0, held: 0, retryAfterMs: 0 };
  for (const vote of votes) {
    if (!vote.ok) continue;
    if (vote.value.acquired) tally.yes++;
    else {
      tally.held++;
      tally.retryAfterMs = Math.max(tally.retryAfterMs, vote.value.holderTtl);
    }
  }
  return tally;
}

/**
 * Contention when another owner refused and the instances that answered could have formed a
 * quorum (waiting may help); otherwise unavailability (waiting on the owner would not).
 */
function classify(
  tally: AcquireTally,
  votes: readonly Vote<AcquireReply>[],
  value: string,
  quorum: number,
  validity: number,
): Failure {
  if (tally.held > 0 && tally.yes + tally.held >= quorum) {
    return { kind: "contention", retryAfterMs: tally.retryAfterMs };
  }
  if (tally.yes >= quorum && validity <= 0) {
    return {
      kind: "unavailable",
      causes: failuresOf(votes, value),
      message: "Lock acquisition took longer than the ttl: no validity left",
    };
  }
  return { kind: "unavailable", causes: failuresOf(votes, value) };
}

/** A Lock that Redlock made: a forged one (`Object.create(Lock.prototype)`) has no state. */
const isLock = (lock: unknown): lock is Lock => lock instanceof Lock && lock[STATE] instanceof LockState;

const notALock = () => new TypeError("lock must be a Lock returned by this Redlock");

/** What the instances are asked about: keys, value, and the ttl to set. */
interface LockRequest {
  readonly keys: readonly string[];
  readonly value: string;
  readonly ttl: number;
}

/** An acquisition's request; a waiter's attempts carry its queue ticket. */
interface AcquireRequest extends LockRequest {
  ticket: QueueTicket | undefined;
}

// One function each, given the request as fanOut's argument: no closure per call.
const acquireCall = (store: LockStore, r: AcquireRequest) => store.acquire(r.keys, r.value, r.ttl, r.ticket);
const extendCall = (store: LockStore, r: LockRequest) => store.extend(r.keys, r.value, r.ttl);
const releaseCall = (store: LockStore, r: Omit<LockRequest, "ttl">) => store.release(r.keys, r.value);
/** A failed attempt's release: a queued waiter keeps its place where it gives keys back. */
const giveBackCall = (store: LockStore, r: AcquireRequest) => store.release(r.keys, r.value, r.ticket);

function countVotes<T>(votes: readonly Vote<T>[], yes: (value: T) => boolean): number {
  let count = 0;
  for (const vote of votes) if (vote.ok && yes(vote.value)) count++;
  return count;
}

/** Throws unless every store can issue fencing tokens. */
function checkFencing(stores: readonly LockStore[]): void {
  const index = stores.findIndex((store) => !canFence(store));
  if (index !== -1) {
    throw new TypeError(
      `fencing needs every instance to support it (acquireFenced and raiseFences); instances[${index}] does not`,
    );
  }
}

/** Two entries that are the same Redis database would vote twice and fake a quorum. */
function checkDistinct(resolved: readonly ResolvedInstance[]): void {
  const seenStores = new Map<LockStore, number>();
  const seenIdentities = new Map<string, number>();
  resolved.forEach((instance, index) => {
    const sameStore = seenStores.get(instance.store);
    if (sameStore !== undefined) {
      throw new TypeError(`instances[${index}] is the same store as instances[${sameStore}]: it would vote twice`);
    }
    seenStores.set(instance.store, index);
    const identity = instanceIdentity(instance);
    if (identity === undefined) return;
    const sameServer = seenIdentities.get(identity);
    if (sameServer !== undefined) {
      throw new TypeError(
        `instances[${index}] is the same Redis database as instances[${sameServer}] (${identity}): it would vote twice`,
      );
    }
    seenIdentities.set(identity, index);
  });
}

/** How long a call may still wait after `attempts` attempts, at most: how long its queue entries must last. */
const waitBudget = (opts: ResolvedAcquireOptions, attempts: number) =>
  opts.wait ?? (opts.retryCount + 1 - attempts) * (opts.retryDelay + opts.retryJitter);

const isRefused = (vote: Vote<AcquireReply> | undefined) => vote?.ok === true && !vote.value.acquired;

/** Indexes of the instances that did not take the keys: a waiter may sit in their queues. */
function notTaken(votes: readonly Vote<AcquireReply>[]): number[] {
  const indexes: number[] = [];
  votes.forEach((vote, index) => {
    if (!vote.ok || !vote.value.acquired) indexes.push(index);
  });
  return indexes;
}

/** The delay before the next try: `retryDelay` plus up to `retryJitter` ms. */
const pollDelay = (opts: ResolvedAcquireOptions) =>
  opts.retryDelay + Math.floor(Math.random() * (opts.retryJitter + 1));

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
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
