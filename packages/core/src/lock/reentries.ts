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
 * The `LockConfigurationError` of a lock that fences (its `fencing`, else its Redlock's) taken under
 * enclosing locks of which one was taken without fencing (`unfenced`): it would read no fence for
 * the resources those hold (`currentFence()` undefined). One rule for a route nested in a guard of
 * its request and for a call re-entering a lock of its call chain; `message` says which.
 */
export function unfencedReentry(
  redlock: Redlock,
  fencing: boolean | undefined,
  unfenced: boolean,
  resources: readonly string[],
  message: string,
): LockConfigurationError | undefined {
  return unfenced && routeFences(redlock, fencing) ? new LockConfigurationError(message, [], resources) : undefined;
}

/**
 * Throws `unfencedReentry`'s error for a call that would run under `locks`, the enclosing locks
 * holding some of its `resources`.
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
  const unfenced = locks.some((lock) => lock.fences === undefined);
  const error = unfencedReentry(
    redlock,
    fencing,
    unfenced,
    resources,
    "A call that fences (its fencing: true, or its Redlock's) re-entered a lock of its call chain held without fencing: give that lock fencing: true too",
  );
  if (error !== undefined) throw error;
}
