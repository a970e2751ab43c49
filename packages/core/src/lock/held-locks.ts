import { AsyncLocalStorage } from "node:async_hooks";
import type { Redlock } from "../redlock.js";
import type { Lock } from "./lock.js";

/** The locks held by the enclosing calls of the current async call chain, per Redlock, and all of them, outermost first. */
interface HeldLocks {
  readonly byRedlock: ReadonlyMap<Redlock, readonly Lock[]>;
  /**
   * Every Redlock's, in the order they were entered: the last is the innermost. Absent in a context
   * an older copy of core made (the store is shared): `chainOf` rebuilds it.
   */
  readonly chain?: readonly Lock[];
  readonly innermost: Lock;
  /**
   * The resources the innermost call holds `innermost` for, when it re-entered a lock on more:
   * `currentFence()` is then the fence of its one resource, not that of the whole lock (none).
   */
  readonly resources?: readonly string[];
}

/**
 * One store per process, shared by every installed copy of core through a global symbol, so that a
 * route lock taken by an adapter is seen by `@Locked` even when they resolved different copies.
 * Created only once something reads it (`trackHeldLocks`): on Node 20 an AsyncLocalStorage in use
 * slows every promise of the process, which apps without `@Locked` should not pay for.
 */
const SHARED = Symbol.for("redlock-kit.held-locks");
const shared = globalThis as { [SHARED]?: AsyncLocalStorage<HeldLocks> };

/**
 * Turns on the async context of held locks. `@redlock-kit/decorators` calls it when a method is
 * decorated; from then on a lock held through `holdingLock` (the HTTP adapters' route locks, an
 * enclosing `@Locked` call) counts as held for the calls made while it runs.
 */
export function trackHeldLocks(): void {
  shared[SHARED] ??= new AsyncLocalStorage<HeldLocks>();
}

/**
 * Runs `fn` with `lock` added to the locks its async call chain holds through `redlock`. Without
 * tracking (nothing reads the context), it just calls `fn`. `resources`: those of `lock` that `fn`
 * holds it for, when fewer (a call that re-entered it), whose fence `currentFence()` reads.
 *
 * @example
 * // in an adapter, once the route's lock is acquired
 * holdingLock(dlm, lock, next);
 */
export function holdingLock<T>(redlock: Redlock, lock: Lock, fn: () => T, resources?: readonly string[]): T {
  const chain = shared[SHARED];
  if (chain === undefined) return fn();
  const held = chain.getStore();
  const byRedlock = new Map(held?.byRedlock);
  byRedlock.set(redlock, [...(byRedlock.get(redlock) ?? []), lock]);
  return chain.run({ byRedlock, chain: [...chainOf(held), lock], innermost: lock, resources }, fn);
}

/**
 * Runs `fn` outside every held lock, where a `@Locked` call locks afresh. For what core calls back
 * on its own (a lock's signal aborting): it may run in the context of any call chain, the one that
 * armed the process's shared timer, and must not count as holding that chain's locks.
 */
export function outsideHeldLocks(fn: () => void): void {
  const chain = shared[SHARED];
  if (chain === undefined) fn();
  else chain.exit(fn);
}

/** The held locks outermost first; for a context without `chain`, each Redlock's in turn (the best order it knows). */
const chainOf = (held: HeldLocks | undefined): readonly Lock[] =>
  held === undefined ? [] : (held.chain ?? [...held.byRedlock.values()].flat());

/**
 * The resources this call chain does not hold yet through `redlock`. A lock counts only while it is
 * valid: a call made after the enclosing lock was released or lost locks afresh. `held`: the locks
 * `locksHolding(redlock, resources)` returned, when the caller runs under them: each call reads the
 * locks' validity, which may end in between (a resource then counted as held under no lock it checks).
 */
export function resourcesNotHeld(
  redlock: Redlock,
  resources: readonly string[],
  held: readonly Lock[] = locksHolding(redlock, resources),
): readonly string[] {
  return resources.filter((resource) => !held.some((lock) => lock.resources.includes(resource)));
}

/**
 * The valid locks through which this call chain holds any of `resources` via `redlock`: what a call
 * that does not lock those resources again runs under, and must still hold when it finishes.
 */
export function locksHolding(redlock: Redlock, resources: readonly string[]): readonly Lock[] {
  const locks = shared[SHARED]?.getStore()?.byRedlock.get(redlock);
  if (locks === undefined) return [];
  return locks.filter((lock) => lock.valid && resources.some((resource) => lock.resources.includes(resource)));
}

/**
 * The lock taken by the innermost enclosing call that holds one (a `@Locked` method, or the route
 * whose request this is), or `undefined` outside any, or while nothing tracks held locks.
 *
 * @example
 * class Reports {
 *   @Locked("report:{0}", { fencing: true })
 *   async publish(id: string) {
 *     await store.write(id, render(), currentLock()?.fence);
 *   }
 * }
 */
export function currentLock(): Lock | undefined {
  return shared[SHARED]?.getStore()?.innermost;
}

/**
 * The fencing token under which this code runs: with `resource`, the fence of that resource in the
 * innermost enclosing lock that holds it (through any Redlock); without, the fence of the innermost
 * lock when it holds one resource, or of the one resource a call re-entered it for (`holdingLock`'s
 * `resources`). `undefined` outside a held lock, for a resource the chain does not hold, or when
 * the lock was taken without `fencing: true`.
 *
 * @example
 * @Locked("account:{0}", { fencing: true })
 * async credit(id: string, amount: number) {
 *   await db.query("UPDATE accounts SET balance = balance + $2, fence = $3 WHERE id = $1 AND fence < $3", [id, amount, currentFence()]);
 * }
 */
export function currentFence(resource?: string): string | undefined {
  const held = shared[SHARED]?.getStore();
  if (held === undefined) return undefined;
  if (resource === undefined) {
    // a call re-entered on one resource of a lock on several writes with that resource's fence
    const only = held.resources?.length === 1 ? held.resources[0] : undefined;
    return only === undefined ? held.innermost.fence : held.innermost.fences?.[only];
  }
  // innermost first, across Redlocks: two Redlocks (other key prefixes, other instances) may each
  // hold a resource of that name, with counters of their own; the innermost is the one this code
  // runs under
  const locks = chainOf(held);
  for (let i = locks.length - 1; i >= 0; i--) {
    const lock = locks[i] as Lock;
    if (lock.resources.includes(resource)) return lock.fences?.[resource];
  }
  return undefined;
}
