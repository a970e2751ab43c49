import { AsyncLocalStorage } from "node:async_hooks";
import type { Lock } from "./lock.js";
import type { Redlock } from "./redlock.js";

/** The locks held by the enclosing calls of the current async call chain, per Redlock. */
type HeldLocks = ReadonlyMap<Redlock, readonly Lock[]>;

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
 * tracking (nothing reads the context), it just calls `fn`.
 *
 * @example
 * // in an adapter, once the route's lock is acquired
 * holdingLock(dlm, lock, next);
 */
export function holdingLock<T>(redlock: Redlock, lock: Lock, fn: () => T): T {
  const chain = shared[SHARED];
  if (chain === undefined) return fn();
  const outer = chain.getStore();
  const held = new Map(outer);
  held.set(redlock, [...(outer?.get(redlock) ?? []), lock]);
  return chain.run(held, fn);
}

/**
 * The resources this call chain does not hold yet through `redlock`. A lock counts only while it is
 * valid: a call made after the enclosing lock was released or lost locks afresh.
 */
export function resourcesNotHeld(redlock: Redlock, resources: readonly string[]): readonly string[] {
  const locks = shared[SHARED]?.getStore()?.get(redlock);
  if (locks === undefined) return resources;
  const valid = locks.filter((lock) => lock.valid);
  return resources.filter((resource) => !valid.some((lock) => lock.resources.includes(resource)));
}
