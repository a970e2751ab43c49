import { type Lock, STATE } from "./lock.js";
import type { ResolvedHoldOptions } from "./options.js";

interface Extender {
  extend(lock: Lock, ttl: number): Promise<Lock>;
}

/**
 * Keeps `lock` alive while its holder works: renews it to `ttl` whenever less than
 * `extendThreshold × ttl` is left, and never past `maxHoldMs` from now. A failed
 * extension marks the lock lost (its signal aborts) and stops. Returns `stop`.
 */
export function autoExtend(owner: Extender, lock: Lock, ttl: number, hold: ResolvedHoldOptions): () => void {
  const state = lock[STATE];
  const clock = state.clock;
  const holdEnd = clock() + hold.maxHoldMs;
  const margin = Math.floor(ttl * hold.extendThreshold);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  const schedule = () => {
    timer = setTimeout(run, Math.max(0, Math.floor(state.validUntil - clock() - margin)));
    // A held lock alone should not keep the process alive.
    timer.unref();
  };
  const run = async () => {
    timer = undefined;
    if (stopped || !lock.valid) return;
    // Past the cap the lock is left to expire: its signal aborts when the validity ends.
    const next = Math.min(ttl, Math.floor(holdEnd - clock()));
    if (next <= lock.remainingMs) return;
    try {
      await owner.extend(lock, next);
      if (!stopped) schedule();
    } catch {
      // extend() marked the lock lost and aborted its signal; nothing more to do here
    }
  };

  schedule();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
