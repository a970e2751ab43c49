import { LockConfigurationError } from "../errors.js";
import { routeFences } from "../http/request-locks.js";
import type { Redlock } from "../redlock.js";
import { type Lock, STATE } from "./lock.js";

/**
 * Runs `fn` as a call that re-entered `locks`: its callers hold them, and it neither took them nor
 * releases them. A release of one while `fn` still runs (a call its caller started without awaiting
 * it) aborts that lock's signal with `LockLostError`: `fn` goes on without the lock, and
 * `currentLock()?.signal` tells it so before it finishes.
 *
 * @example
 * // in @Locked, for a call whose resources the enclosing calls hold
 * await reenteringLocks(locksHolding(dlm, resources), body);
 */
export async function reenteringLocks<T>(locks: readonly Lock[], fn: () => T | Promise<T>): Promise<T> {
  // a lock of another installed copy of core keeps its state under that copy's symbol
  const states = locks.map((lock) => lock[STATE]).filter((state) => state !== undefined);
  for (const state of states) state.reentries++;
  try {
    return await fn();
  } finally {
    for (const state of states) state.reentries--;
  }
}

/**
 * Throws `LockConfigurationError` when a call that fences (its `fencing`, else its Redlock's) would
 * run under `locks`, the enclosing locks holding some of its `resources`, and one of them was taken
 * without fencing: it would read no fence for those resources (`currentFence()` undefined), as a
 * route nested in an unfenced guard would.
 *
 * @example
 * // in @Locked, before a call runs under the locks its callers hold
 * checkReenteredFencing(dlm, options.fencing, locksHolding(dlm, resources), resources);
 */
export function checkReenteredFencing(
  redlock: Redlock,
  fencing: boolean | undefined,
  locks: readonly Lock[],
  resources: readonly string[],
): void {
  if (locks.every((lock) => lock.fences !== undefined) || !routeFences(redlock, fencing)) return;
  throw new LockConfigurationError(
    "A call that fences (its fencing: true, or its Redlock's) re-entered a lock of its call chain held without fencing: give that lock fencing: true too",
    [],
    resources,
  );
}
