import { performance } from "node:perf_hooks";
import { rememberFencing } from "./http/request-locks.js";
import { autoExtend } from "./lock/auto-extend.js";
import { LiveLocks } from "./lock/live-locks.js";
import { Lock, LockState, markReleased, ownerOf, STATE } from "./lock/lock.js";
import { channels } from "./observe/diagnostics.js";
import {
  type ForcedRelease,
  type ForceReleaseOptions,
  type InspectOptions,
  Inspector,
  type LockInspection,
} from "./observe/inspect.js";
import {
  type AttemptCounter,
  traceAcquire,
  traceExtend,
  traceRelease,
  traceUsing,
  tracingChannels,
} from "./observe/tracing.js";
import {
  type AcquireOptions,
  acquirePart,
  checkOptionNames,
  checkOptionsObject,
  DEFAULT_ACQUIRE,
  DEFAULT_HOLD,
  type HoldOptions,
  instanceTimeoutFor,
  OPTION_NAMES,
  type RedlockOptions,
  type ResolvedAcquireOptions,
  type ResolvedHoldOptions,
  resolveAcquireOptions,
  resolveHoldOptions,
  resolveKeyPrefix,
  resolveLazyConnect,
} from "./options.js";
import { AcquireLoop } from "./quorum/acquire-loop.js";
import { fanOut, type Quorum } from "./quorum/ballot.js";
import { extendOnQuorum } from "./quorum/extension.js";
import { checkFencing, resolveInstances } from "./quorum/instance-checks.js";
import type { RedlockInstance, ResolvedInstance } from "./quorum/instances.js";
import { type QuorumContext, releaseCall } from "./quorum/requests.js";
import { ServerIdentityCheck } from "./quorum/server-identity.js";
import { countVotes } from "./quorum/votes.js";
import { type Grant, OwnGrants } from "./speed/own-grant.js";
import { Retake, type RetakeWindow } from "./speed/retake.js";
import { letEnd } from "./stores/keep-connecting.js";
import { NodeRedisStore } from "./stores/node-redis/node-redis-store.js";
import { RedisStore } from "./stores/redis-store.js";
import { canFence, type LockStore } from "./stores/store.js";
import { checkFunction, checkMs } from "./validate.js";
import { HandOvers } from "./waiting/hand-over.js";

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
  readonly #quorum: QuorumContext;
  readonly #loop: AcquireLoop;
  readonly #handOvers: HandOvers;
  readonly #retake: Retake;
  readonly #grants: OwnGrants;
  readonly #live = new LiveLocks();
  readonly #inspector: Inspector;
  readonly #defaults: ResolvedAcquireOptions;
  readonly #hold: ResolvedHoldOptions;
  readonly #prefix: string;
  readonly #clock: () => number;
  /** A one-key release is done once a quorum deleted its key: made once, not per release. */
  readonly #oneKeyQuorum: Quorum<number>;
  /** Set by stopAcquiring() (or quit()): resolves once the acquisitions ended. */
  #stopping: Promise<void> | undefined;

  constructor(instances: readonly RedlockInstance[], options?: RedlockOptions) {
    if (!Array.isArray(instances) || instances.length === 0) {
      throw new TypeError("instances must be a non-empty array of clients, options, URLs or stores");
    }
    checkOptionsObject("options", options);
    checkOptionNames(options, OPTION_NAMES.redlock, "new Redlock()");
    this.#defaults = resolveAcquireOptions(DEFAULT_ACQUIRE, options);
    rememberFencing(this, this.#defaults.fencing);
    this.#hold = resolveHoldOptions(DEFAULT_HOLD, options);
    this.#prefix = resolveKeyPrefix(options);
    const clock = options && Object.hasOwn(options, "clock") ? options.clock : undefined;
    this.#clock = clock === undefined ? () => performance.now() : checkFunction<() => number>("options.clock", clock);
    const resolved = resolveInstances(instances, this.#defaults.fencing, resolveLazyConnect(options));
    this.#instances = resolved;
    this.#stores = resolved.map((instance) => instance.store);
    this.quorum = Math.floor(resolved.length / 2) + 1;
    this.#oneKeyQuorum = { need: this.quorum, yes: (deleted) => deleted === 1 };
    const identity = new ServerIdentityCheck(resolved);
    this.#quorum = { stores: this.#stores, quorum: this.quorum, identity, clock: this.#clock };
    this.#handOvers = new HandOvers(
      this.#stores,
      this.quorum,
      (index, server) => identity.grantsFrom(index, server),
      this.#clock,
      (value) => this.#live.holds(value),
    );
    this.#retake = new Retake(this.#handOvers.channel, this.quorum);
    this.#grants = new OwnGrants(this.#handOvers, this.#stores);
    this.#loop = new AcquireLoop(this.#quorum, {
      owner: this,
      giveBack: (lock) => this.#unlock(lock, false),
      handOvers: this.#handOvers,
      retake: this.#retake,
      live: this.#live,
      prefix: this.#prefix,
      defaults: this.#defaults,
      canFence: this.#stores.every(canFence),
    });
    this.#inspector = new Inspector(
      this.#stores,
      this.quorum,
      identity,
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
    if (!tracingChannels.acquire.hasSubscribers) return this.#loop.run(resources, ttl, options, true);
    const n = this.#stores.length;
    return traceAcquire(resources, ttl, n, options, (counter) =>
      this.#loop.run(resources, ttl, options, true, counter),
    );
  }

  /** Like `lock()`, but rejects with `LockContentionError` (carrying `retryAfterMs`) instead of resolving to `null`. */
  acquire(resources: string | readonly string[], ttl: number, options?: AcquireOptions): Promise<Lock> {
    if (!tracingChannels.acquire.hasSubscribers) return this.#loop.run(resources, ttl, options, false) as Promise<Lock>;
    const n = this.#stores.length;
    const call = (counter: AttemptCounter) => this.#loop.run(resources, ttl, options, false, counter);
    return traceAcquire(resources, ttl, n, options, call) as Promise<Lock>;
  }

  /**
   * Releases the lock on every instance (compare-and-delete: another owner's key is never touched).
   * Resolves to `true` as soon as a quorum deleted it (the release still reaches the other
   * instances), `false` if it had expired, been taken or was already released, or too few
   * instances answered (the keys may then stay until their ttl). Never rejects
   * because of the lock's state, and never waits on a dead instance longer than the per-instance
   * timeout.
   */
  unlock(lock: Lock): Promise<boolean> {
    if (!tracingChannels.release.hasSubscribers) return this.#unlock(lock);
    return traceRelease(lock, this.#stores.length, this.#live, () => this.#unlock(lock));
  }

  /**
   * `announced`: the release is published on the point channel. A give-back (a lock won by an
   * acquisition that then ended without it: `AcquireParts.giveBack`) is not a release call, and is
   * neither traced nor published: that call is traced and published as its failure alone.
   */
  #unlock(lock: Lock, announced = true): Promise<boolean> {
    if (!this.#isOwn(lock)) return Promise.reject(notALock());
    if (!markReleased(lock)) {
      // released before: nothing to do, but a call that ended all the same (its first release's
      // answer, `heldAtRelease`, stays)
      if (channels.release.hasSubscribers)
        channels.release.publish({ resources: lock.resources, released: false, elapsedMs: 0 });
      return Promise.resolve(false);
    }
    this.#live.delete(lock);
    const state = lock[STATE];
    const start = this.#clock();
    if (state.keys.length === 1 && this.#handOvers.listening) return this.#unlockOne(lock, start, announced);
    const quorum: Quorum<number> = { need: this.quorum, yes: (deleted) => deleted === state.keys.length };
    // Resolves once a quorum deleted the keys; the other instances' commands are already on their way.
    return fanOut(this.#stores, releaseCall, state, state.instanceTimeout, quorum).then((votes) =>
      this.#released(lock, countVotes(votes, quorum.yes) >= this.quorum, start, announced),
    );
  }

  /**
   * A one-key lock while this Redlock waits for hand-overs: the release may be retaken
   * (speed/retake.ts), or grant the key to a waiter of this Redlock (speed/own-grant.ts).
   */
  #unlockOne(lock: Lock, start: number, announced: boolean): Promise<boolean> {
    const quorum = this.#oneKeyQuorum;
    const state = lock[STATE];
    const key = state.keys[0] as string;
    const window = this.#retake.releasing(key, state.streakStart, start - state.acquiredAt, state.ttl, start);
    const grant = this.#grants.offer(key, start);
    const call = Retake.retakes(window) || grant !== undefined ? oneKeyCall : releaseCall;
    const ownQueued = grant !== undefined || this.#handOvers.waitsOn(key);
    const request: OneKeyRequest = {
      keys: state.keys,
      value: state.value,
      retake: this.#retake,
      window,
      grant,
      ownQueued,
    };
    return fanOut(this.#stores, call, request, state.instanceTimeout, quorum).then((votes) => {
      this.#retake.released(key, window);
      return this.#released(lock, countVotes(votes, quorum.yes) >= this.quorum, start, announced);
    });
  }

  #released(lock: Lock, released: boolean, start: number, announced: boolean): boolean {
    lock[STATE].heldAtRelease = released;
    if (announced && channels.release.hasSubscribers) {
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

  #extend(lock: Lock, ttl: number): Promise<Lock> {
    try {
      this.#checkLock(lock);
      checkMs("ttl", ttl);
      // a ttl the drift uses up, refused as acquire refuses it: sent, it would cut the keys to a few
      // ms and report the lock lost
      instanceTimeoutFor(ttl, { instanceTimeout: undefined, driftFactor: lock[STATE].driftFactor });
    } catch (error) {
      return Promise.reject(error);
    }
    return extendOnQuorum(this.#quorum, lock, ttl, lock[STATE].driftFactor);
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
    checkOptionNames(options, OPTION_NAMES.using, "using()");
    const hold = resolveHoldOptions(this.#hold, options);
    const lock = await this.acquire(resources, ttl, acquirePart(options));
    const stop = autoExtend(this, lock, ttl, hold);
    try {
      return await fn(lock.signal, lock);
    } finally {
      stop();
      await this.unlock(lock);
    }
  }

  /**
   * Throws the `TypeError`/`RangeError` that a lock of `ttl` with `options` would get from
   * `lock()`, this Redlock's own options filling in the rest, without sending anything: for a lock
   * declared ahead of time (a route), where options that cannot work with this Redlock's (its
   * `instanceTimeout` not shorter than the ttl) fail at the declaration, not at every call.
   */
  checkOptions(ttl: number, options?: AcquireOptions): void {
    checkMs("ttl", ttl);
    checkOptionNames(options, OPTION_NAMES.lock, "lock()");
    const resolved = resolveAcquireOptions(this.#defaults, options);
    instanceTimeoutFor(ttl, resolved);
    if (resolved.fencing && !this.#stores.every(canFence)) checkFencing(this.#stores);
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
   * With `holder` (what `inspect()` showed), an instance deletes the key only if that holder still
   * has it, in one step: a lock that changed hands since is kept.
   */
  forceRelease(resource: string, options?: ForceReleaseOptions): Promise<ForcedRelease> {
    return this.#inspector.forceRelease(resource, options);
  }

  /**
   * The first step of `quit()`, leaving the clients open: acquisitions still running end (a waiting
   * one stops waiting; what they took is given back) and reject with `LockUnavailableError`, later
   * ones are refused with it, and a key a release reserved for a next call is released. Locks
   * already held still extend and release as usual: a graceful shutdown calls this, waits for the
   * work that holds locks, then calls `quit()`. Resolves once the acquisitions ended (at most 1 s:
   * an instance that does not answer); calling it again, or `quit()`, does not repeat it.
   */
  stopAcquiring(): Promise<void> {
    this.#stopping ??= this.#stopAcquiring();
    return this.#stopping;
  }

  async #stopAcquiring(): Promise<void> {
    // Both at once, within one bound, while the connections are open: whatever a running
    // acquisition took is given back, and a key reserved for a next call that will not come is
    // released. Retake stops now, not after the acquisitions ended: a release meanwhile (a held
    // lock's, or that of a call that acquired as it was stopped) must reserve nothing either.
    await Promise.all([this.#loop.quit(QUIT_BOUND_MS), this.#retake.quit(QUIT_BOUND_MS)]);
  }

  /**
   * Closes the clients this Redlock created from options or URLs; clients and stores it was handed
   * stay open. Acquisitions still running end first, rejecting with `LockUnavailableError`, and
   * later ones are refused with it (`stopAcquiring()`); locks already held are left as they are.
   */
  async quit(): Promise<void> {
    await this.stopAcquiring();
    // ends this Redlock's subscriptions; a handed store's connection closes once nobody else listens on it
    this.#handOvers.close();
    // the listeners it put on the clients: a handed one stays open, and may serve the next Redlock
    this.#quorum.identity.close(this.#stores);
    for (const { store, ownStore } of this.#instances) {
      if (ownStore && (store instanceof RedisStore || store instanceof NodeRedisStore)) store.close();
    }
    await Promise.all(
      this.#instances.map(async ({ owned }) => {
        if (!owned) return;
        letEnd(owned);
        if (owned.status === "end") return;
        const ended = new Promise((resolve) => owned.once("end", resolve));
        // QUIT lets pending replies arrive; a dead instance must not make quit() hang, hence the bound.
        const bound = new Promise((resolve) => setTimeout(resolve, QUIT_BOUND_MS).unref());
        await Promise.race([owned.quit().catch(() => {}), bound]);
        owned.disconnect();
        // Between two connection attempts there is no socket left to close: ioredis leaves the
        // client "reconnecting" and never emits 'end'. Waiting for it would hold quit() for the
        // bound, whose timer is unref'd: a process with nothing else alive would exit with quit() unsettled.
        if (owned.status !== "reconnecting") await Promise.race([ended, bound]);
      }),
    );
  }

  #checkLock(lock: Lock): void {
    if (!this.#isOwn(lock)) throw notALock();
  }

  /**
   * A Lock this Redlock made. Another Redlock's lock is refused: its release would go to that
   * Redlock's instances, mark the lock released (its own release then sends nothing, and its keys
   * stay until they expire) and unlink it from the wrong list of live locks.
   */
  #isOwn(lock: Lock): boolean {
    return isLock(lock) && ownerOf(lock) === this;
  }
}

/** How long quit() waits on an instance that does not answer. */
const QUIT_BOUND_MS = 1000;

/** A Lock that Redlock made: a forged one (`Object.create(Lock.prototype)`) has no state. */
const isLock = (lock: unknown): lock is Lock => lock instanceof Lock && lock[STATE] instanceof LockState;

const notALock = () => new TypeError("lock must be a Lock returned by this Redlock");

interface OneKeyRequest {
  readonly keys: readonly string[];
  readonly value: string;
  readonly retake: Retake;
  readonly window: RetakeWindow;
  readonly grant: Grant | undefined;
  readonly ownQueued: boolean;
}

const oneKeyCall = (store: LockStore, r: OneKeyRequest) =>
  r.retake.release(store, r.keys[0] as string, r.value, r.window, r.grant, r.ownQueued);
