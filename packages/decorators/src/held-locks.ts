import { AsyncLocalStorage } from "node:async_hooks";
import type { Lock, Redlock } from "@redlock-kit/core";

/** The locks held by the `@Locked` calls enclosing the current async call chain, per Redlock, and the innermost one. */
interface HeldLocks {
  readonly byRedlock: ReadonlyMap<Redlock, readonly Lock[]>;
  readonly innermost: Lock;
}

const chain = new AsyncLocalStorage<HeldLocks>();

/**
 * The resources this call chain does not hold yet through `redlock`. A lock counts only while it
 * is valid: a call started by a caller whose lock has since been released or lost locks afresh.
 */
export function resourcesNotHeld(redlock: Redlock, resources: readonly string[]): readonly string[] {
  const locks = chain.getStore()?.byRedlock.get(redlock);
  if (locks === undefined) return resources;
  const valid = locks.filter((lock) => lock.valid);
  return resources.filter((resource) => !valid.some((lock) => lock.resources.includes(resource)));
}

/** Runs `fn` with `lock` added to the locks its call chain holds through `redlock`. */
export function runHolding<T>(redlock: Redlock, lock: Lock, fn: () => T): T {
  const outer = chain.getStore();
  const byRedlock = new Map(outer?.byRedlock);
  byRedlock.set(redlock, [...(byRedlock.get(redlock) ?? []), lock]);
  return chain.run({ byRedlock, innermost: lock }, fn);
}

/**
 * The lock taken by the innermost `@Locked` call enclosing this code (a re-entrant call that took
 * no lock of its own runs under its caller's), or `undefined` outside any.
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
  return chain.getStore()?.innermost;
}

/**
 * The fencing token under which this code runs: with `resource`, the fence of that resource in the
 * innermost enclosing `@Locked` lock that holds it (through any Redlock); without, the fence of
 * the innermost lock when it holds one resource. `undefined` outside a `@Locked` call, for a
 * resource the chain does not hold, or when the lock was taken without `fencing: true`.
 *
 * @example
 * @Locked("account:{0}", { fencing: true })
 * async credit(id: string, amount: number) {
 *   await db.query("UPDATE accounts SET balance = balance + $2, fence = $3 WHERE id = $1 AND fence < $3", [id, amount, currentFence()]);
 * }
 */
export function currentFence(resource?: string): string | undefined {
  const held = chain.getStore();
  if (held === undefined) return undefined;
  if (resource === undefined) return held.innermost.fence;
  if (held.innermost.resources.includes(resource)) return held.innermost.fences?.[resource];
  // the others, innermost first: a later lock in a Redlock's list was taken deeper in the chain
  for (const locks of held.byRedlock.values()) {
    for (let i = locks.length - 1; i >= 0; i--) {
      const lock = locks[i] as Lock;
      if (lock.resources.includes(resource)) return lock.fences?.[resource];
    }
  }
  return undefined;
}
