import { LockLostError } from "../errors.js";
import { outsideHeldLocks } from "./held-locks.js";

/** What a Lock asks of the Redlock that made it. */
export interface LockOwner {
  unlock(lock: Lock): Promise<boolean>;
  extend(lock: Lock, ttl: number): Promise<Lock>;
}

/** Internal, mutable state of a Lock: only Redlock changes it. */
export class LockState {
  /** Monotonic time (ms) when the current validity ends. */
  validUntil = 0;
  /** Wall-clock time (epoch ms) matching `validUntil`, for display. */
  expiresAt = 0;
  released = false;
  /** Whether a quorum still held it when its release answered; `undefined` until then. */
  heldAtRelease: boolean | undefined;
  lost: LockLostError | undefined;
  /** Calls running under it that did not take it (lock/reentries.ts): released while one runs, it aborts its signal. */
  reentries = 0;
  /** Why its signal aborted when it was released while re-entered calls still ran: they go on without it. */
  releasedUnder: LockLostError | undefined;
  controller: AbortController | undefined;
  timer: NodeJS.Timeout | undefined;
  /**
   * When it was asked for right after this Redlock released its key (speed/retake.ts): the
   * monotonic time (ms) when the run of such locks it belongs to began.
   */
  streakStart: number | undefined;
  /** Monotonic time (ms) when it was acquired: how long it was held decides whether its release may be retaken. */
  acquiredAt = 0;
  /** The ttl it was acquired with: a retake reserves the key for the next lock with this ttl. */
  ttl = 0;
  /** The clock drift allowance it was acquired with: its extensions count validity with it too. */
  driftFactor = 0.01;
  /**
   * Extensions sent so far, and the latest sent of those answered: an older one answered later no
   * longer sets the validity (quorum/extension.ts).
   */
  extensionsSent = 0;
  newestAnswered = 0;
  /** Its auto-extension's: times the next renewal from the validity an extension left (lock/auto-extend.ts). */
  onValidityChange: (() => void) | undefined;
  /** @internal links of its Redlock's list of live locks (lock/live-locks.ts), owned by that list */
  livePrev: LockState | undefined = undefined;
  /** @internal */
  liveNext: LockState | undefined = undefined;
  /** @internal whether it is in that list */
  live = false;
  /**
   * @internal taken out of that list by a sweep, invalid but not released: its release, which may
   * still come, says how long it was held
   */
  swept = false;

  constructor(
    /** Redis keys: the resources with the key prefix. */
    readonly keys: readonly string[],
    /** The lock's value, as on `Lock`. */
    readonly value: string,
    /** Per-instance timeout used for this lock's extend and release calls. */
    readonly instanceTimeout: number,
    readonly clock: () => number,
  ) {}

  /** True until the drift-adjusted validity ends, the lock is released, or an extension failed. */
  get valid(): boolean {
    return !this.released && this.lost === undefined && this.clock() < this.validUntil;
  }
}

/** Set by Lock's static block: reads a lock's owner (ownerOf). */
let readOwner: (lock: Lock) => LockOwner | undefined;

export const STATE: unique symbol = Symbol("redlock-kit.lock-state");

/**
 * A lock held on a quorum of instances. Obtain one from `Redlock.lock()` or
 * `Redlock.acquire()`; release it with `release()` (or `await using`).
 */
export class Lock {
  /** The resources this lock holds (without the key prefix). */
  readonly resources: readonly string[];
  /** The random value stored under every key (128 bits from node:crypto). Keep it secret. */
  readonly value: string;
  /**
   * The fencing token of a lock on one resource taken with `fencing: true`: a decimal string (it may
   * pass 2^53: compare with `BigInt`, or let the storage compare integers), strictly greater than the
   * fence of every earlier acquisition of that resource. Pass it with every write to the protected
   * storage, which refuses a fence not greater than the last one it saw (`fencedSet`,
   * docs/fencing.md). `undefined` without fencing, and for a lock on several resources: read
   * `fences` then.
   *
   * @example
   * const lock = await dlm.acquire("account:42", 5000, { fencing: true });
   * await db.query("UPDATE accounts SET balance = $3, fence = $2 WHERE id = $1 AND fence < $2", [42, lock.fence, 100]);
   */
  readonly fence: string | undefined;
  /**
   * The fencing tokens of a lock taken with `fencing: true`, one per resource (each resource has its
   * own counter): `{ "account:1": "17", "account:2": "9" }`. `undefined` without fencing.
   */
  readonly fences: Readonly<Record<string, string>> | undefined;
  /** @internal */
  readonly [STATE]: LockState;
  readonly #owner: LockOwner;

  /** @param fences with fencing: one fence per resource, in the order of `resources` */
  constructor(
    owner: LockOwner,
    resources: readonly string[],
    value: string,
    state: LockState,
    fences?: readonly string[],
  ) {
    this.#owner = owner;
    this.resources = Object.isFrozen(resources) ? resources : Object.freeze([...resources]);
    this.value = value;
    this[STATE] = state;
    if (fences === undefined) {
      this.fence = undefined;
      this.fences = undefined;
    } else {
      // no prototype: a resource named "__proto__" or "constructor" is just a key
      const byResource: Record<string, string> = Object.create(null);
      this.resources.forEach((resource, i) => {
        byResource[resource] = fences[i] as string;
      });
      this.fences = Object.freeze(byResource);
      this.fence = fences.length === 1 ? fences[0] : undefined;
    }
  }

  /** True until the drift-adjusted validity ends, the lock is released, or an extension failed. */
  get valid(): boolean {
    return this[STATE].valid;
  }

  /** Milliseconds of validity left (0 once invalid). */
  get remainingMs(): number {
    if (!this.valid) return 0;
    const state = this[STATE];
    return Math.max(0, Math.floor(state.validUntil - state.clock()));
  }

  /** Epoch ms at which the validity ends (informational: validity itself is tracked on a monotonic clock). */
  get expiresAt(): number {
    return this[STATE].expiresAt;
  }

  /**
   * Aborts with a `LockLostError` when the lock is known lost: an extension failed, or the validity
   * ended without an extension; and when it is released while a call that re-entered it (a
   * `@Locked` call its holder started without awaiting it) still runs. No timer is armed until this
   * is first read. Read after the validity ended, it has aborted, as `valid` is false, even when no
   * timer could fire yet (a blocked event loop); a signal read before aborts when its timer fires.
   */
  get signal(): AbortSignal {
    const state = this[STATE];
    if (state.controller === undefined) {
      state.controller = new AbortController();
      const ended = state.lost ?? state.releasedUnder;
      if (ended) state.controller.abort(ended);
      else if (!state.released) armValidityTimer(this);
    }
    // the timer runs only once the event loop turns: a synchronous stretch past the validity, or a
    // first read after it, must not hand out a signal that says the lock still holds
    if (!state.released && state.lost === undefined && state.clock() >= state.validUntil) {
      markLost(this, validityEnded(this));
    }
    return state.controller.signal;
  }

  /** Releases the lock on every instance. Resolves to whether a quorum still held it. Never rejects for an expired lock. */
  release(): Promise<boolean> {
    return this.#owner.unlock(this);
  }

  /** Resets the expiry to `ttl` ms from now on a quorum. Rejects with `LockLostError` when that fails. */
  extend(ttl: number): Promise<Lock> {
    return this.#owner.extend(this, ttl);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#owner.unlock(this);
  }

  static {
    // a forged object with a real lock's state has no owner
    readOwner = (lock) => (#owner in lock ? lock.#owner : undefined);
  }
}

/** The Redlock that made `lock`: only it may release or extend it (another one's instances, retake and live locks are not the lock's). */
export const ownerOf = (lock: Lock): LockOwner | undefined => readOwner(lock);

/** (Re)arms the timer that aborts `signal` when the validity ends; only once someone has read `signal`. */
export function armValidityTimer(lock: Lock): void {
  const state = lock[STATE];
  if (state.controller === undefined || state.controller.signal.aborted) return;
  clearTimeout(state.timer);
  const delay = Math.max(0, Math.ceil(state.validUntil - state.clock()));
  state.timer = setTimeout(onValidityTimer, delay, lock);
  state.timer.unref();
}

/**
 * An extension changed the validity: what waits on it is timed again, the signal's timer and an
 * auto-extension's next renewal (a manual `extend()` to another ttl moves when that is due).
 */
export function validityChanged(lock: Lock): void {
  armValidityTimer(lock);
  lock[STATE].onValidityChange?.();
}

function onValidityTimer(lock: Lock): void {
  const state = lock[STATE];
  state.timer = undefined;
  if (state.released) return;
  // the timer may fire early by rounding, or after an extension that re-armed it
  if (state.clock() < state.validUntil) {
    armValidityTimer(lock);
    return;
  }
  markLost(lock, validityEnded(lock));
}

const validityEnded = (lock: Lock) =>
  new LockLostError(lock.resources, "Lock validity ended before it was extended or released");

/** Records that the lock is lost and aborts its signal. */
export function markLost(lock: Lock, error: LockLostError): void {
  const state = lock[STATE];
  if (state.lost || state.released) return;
  state.lost = error;
  clearTimeout(state.timer);
  state.timer = undefined;
  // its listeners are not the chain's that happened to detect the loss (a renewal on the shared timer)
  const controller = state.controller;
  if (controller !== undefined) outsideHeldLocks(() => controller.abort(error));
}

/**
 * Records the release: the lock is no longer valid and its signal timer stops. The calls that
 * re-entered it and still run go on without it: its signal tells them, as a loss would.
 */
export function markReleased(lock: Lock): boolean {
  const state = lock[STATE];
  if (state.released) return false;
  state.released = true;
  clearTimeout(state.timer);
  state.timer = undefined;
  if (state.reentries > 0 && state.lost === undefined) {
    const error = new LockLostError(lock.resources, "Lock was released while a call that re-entered it still ran");
    state.releasedUnder = error;
    const controller = state.controller;
    if (controller !== undefined) outsideHeldLocks(() => controller.abort(error));
  }
  return true;
}
