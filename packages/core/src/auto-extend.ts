import { type Deadline, deadlines } from "./deadlines.js";
import { LockLostError } from "./errors.js";
import { type Lock, markLost, STATE } from "./lock.js";
import type { ResolvedHoldOptions } from "./options.js";

interface Extender {
  extend(lock: Lock, ttl: number): Promise<Lock>;
}

/**
 * Keeps `lock` alive while its holder works: renews it to `ttl` whenever less than
 * `extendThreshold × ttl` is left, and never past `maxHoldMs` from now. An extension that finds
 * the lock lost stops (its signal aborts); one that could not reach enough instances is retried
 * while validity is left. Returns `stop`.
 */
export function autoExtend(owner: Extender, lock: Lock, ttl: number, hold: ResolvedHoldOptions): () => void {
  const state = lock[STATE];
  const clock = state.clock;
  const holdEnd = clock() + hold.maxHoldMs;
  const margin = Math.floor(ttl * hold.extendThreshold);
  let pending: Deadline | undefined;
  let stopped = false;

  // On the process's shared timer, not a Node timer per lock: a locked HTTP request that ends in
  // milliseconds would otherwise create and clear a timer (and its timer list) every time, which
  // cost more than the rest of the route's lock handling (bench/). Like that timer, a held lock
  // alone does not keep the process alive.
  const runIn = (ms: number) => {
    pending = deadlines.add(Math.max(0, ms), run);
  };
  const schedule = () => runIn(Math.floor(state.validUntil - clock() - margin));
  const run = async () => {
    pending = undefined;
    if (stopped || !lock.valid) return;
    // Past the cap the lock is left to expire: its signal aborts when the validity ends.
    const next = Math.min(ttl, Math.floor(holdEnd - clock()));
    if (next <= lock.remainingMs) return;
    try {
      await owner.extend(lock, next);
      if (!stopped) schedule();
    } catch (error) {
      // LockLostError: extend() marked the lock lost and aborted its signal. Anything else means too
      // few instances answered: try again while validity is left (the signal aborts when it ends).
      if (stopped || !lock.valid || (error as Error).name === "LockLostError") return;
      // No retry could finish in time: report the loss now rather than when the validity timer fires.
      if (lock.remainingMs <= 2 * state.instanceTimeout) {
        markLost(lock, new LockLostError(lock.resources, "Lock could not be extended before its validity ended"));
        return;
      }
      runIn(Math.floor(lock.remainingMs / 4));
    }
  };

  schedule();
  return () => {
    stopped = true;
    if (pending) deadlines.cancel(pending);
  };
}
