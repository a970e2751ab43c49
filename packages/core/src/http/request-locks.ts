import { Lock, ownerOf, STATE } from "../lock/lock.js";
import type { Redlock } from "../redlock.js";

/**
 * The lock a request held (its `req.lock`) when a route of it took another one: a route nested
 * deeper finds the enclosing routes' locks through it. Set for nested routes only, never on the
 * common path of one route lock per request.
 */
const enclosingOf = new WeakMap<Lock, Lock>();

/** Each Redlock's `fencing` option: what a route that does not set its own fences with. */
const fencingDefaults = new WeakMap<Redlock, boolean>();

/** Called by `new Redlock()`. */
export function rememberFencing(redlock: Redlock, fencing: boolean): void {
  fencingDefaults.set(redlock, fencing);
}

/** Whether a route with `fencing` (undefined: not set) on `redlock` asks for fences. */
export function routeFences(redlock: Redlock, fencing: boolean | undefined): boolean {
  return fencing ?? fencingDefaults.get(redlock) === true;
}

/** `lock` was taken by a route of a request that held `requestLock` already. */
export function takenWithin(lock: Lock, requestLock: Lock): void {
  enclosingOf.set(lock, requestLock);
}

/** What the locks a request holds (`requestLock` and those it was taken within) hold of a route's resources. */
export interface RequestHolding {
  /** The resources no valid lock of the request holds through the route's Redlock: the route locks these. */
  readonly pending: readonly string[];
  /** The innermost valid lock that holds every resource the request holds of them (`requestLock` when several do). */
  readonly lock: Lock | undefined;
  /** A lock of the request on one of them that is no longer valid (renewals failed, validity ended), not released. */
  readonly lost: Lock | undefined;
  /** Whether a lock that holds one of them was taken without fencing (it has no fences). */
  readonly unfenced: boolean;
}

/**
 * The request's own state, not an async context: a route on resources its request already holds
 * through the same Redlock (a router-level guard on the same key) must not wait for itself. Only
 * locks this Redlock made count: one of another Redlock, or a released one, holds nothing here.
 */
export function requestHolding(redlock: Redlock, requestLock: unknown, resources: readonly string[]): RequestHolding {
  let pending = resources;
  let holder: Lock | undefined;
  let holders = 0;
  let unfenced = false;
  for (let lock = asLock(requestLock); lock !== undefined; lock = enclosingOf.get(lock)) {
    if (ownerOf(lock) !== redlock || lock[STATE].released) continue;
    const held = lock.resources;
    if (!pending.some((resource) => held.includes(resource))) continue;
    if (!lock.valid) return { pending, lock: undefined, lost: lock, unfenced };
    pending = pending.filter((resource) => !held.includes(resource));
    holder ??= lock;
    holders++;
    if (lock.fences === undefined) unfenced = true;
  }
  const lock = holders > 1 ? asLock(requestLock) : holder;
  return { pending, lock, lost: undefined, unfenced };
}

const asLock = (value: unknown): Lock | undefined => (value instanceof Lock ? value : undefined);
