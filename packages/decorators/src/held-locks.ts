import { AsyncLocalStorage } from "node:async_hooks";
import type { Lock, Redlock } from "@redlock-kit/core";

/** The locks held by the `@Locked` calls enclosing the current async call chain, per Redlock. */
type HeldLocks = ReadonlyMap<Redlock, readonly Lock[]>;

const chain = new AsyncLocalStorage<HeldLocks>();

/**
 * The resources this call chain does not hold yet through `redlock`. A lock counts only while it
 * is valid: a call started by a caller whose lock has since been released or lost locks afresh.
 */
export function resourcesNotHeld(redlock: Redlock, resources: readonly string[]): readonly string[] {
  const locks = chain.getStore()?.get(redlock);
  if (locks === undefined) return resources;
  const valid = locks.filter((lock) => lock.valid);
  return resources.filter((resource) => !valid.some((lock) => lock.resources.includes(resource)));
}

/** Runs `fn` with `lock` added to the locks its call chain holds through `redlock`. */
export function runHolding<T>(redlock: Redlock, lock: Lock, fn: () => T): T {
  const outer = chain.getStore();
  const held = new Map(outer);
  held.set(redlock, [...(outer?.get(redlock) ?? []), lock]);
  return chain.run(held, fn);
}
