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
