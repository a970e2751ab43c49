import { performance } from "node:perf_hooks";
import { type Lock, STATE } from "./lock.js";

interface Entry {
  readonly lock: Lock;
  /** `performance.now()` when it was acquired. */
  readonly since: number;
}

/** Below this many entries nothing is swept: a sweep would cost more than the memory it frees. */
const MIN_SWEEP_SIZE = 1024;

/**
 * The locks one Redlock took and has not released, by value: `inspect()` tells "a lock of this
 * process holds the key" from "another owner does", and a release's trace says how long the lock
 * was held, and a waiter of this Redlock sends no poll that one of its valid locks would refuse
 * (`holdsAnyKey`). Losing a lock needs no bookkeeping here: `holds()` reads `lock.valid`. A lock dropped
 * without a release stays until the registry has doubled in size since the last sweep, so a
 * program that forgets to release cannot grow it without bound.
 */
export class LiveLocks {
  readonly #entries = new Map<string, Entry>();
  /** The lock registered last on each key. */
  readonly #byKey = new Map<string, Lock>();
  #sweepAt = MIN_SWEEP_SIZE;

  add(lock: Lock): void {
    this.#entries.set(lock.value, { lock, since: performance.now() });
    for (const key of lock[STATE].keys) this.#byKey.set(key, lock);
    if (this.#entries.size >= this.#sweepAt) this.#sweep();
  }

  delete(lock: Lock): void {
    this.#entries.delete(lock.value);
    for (const key of lock[STATE].keys) if (this.#byKey.get(key) === lock) this.#byKey.delete(key);
  }

  /** Whether a valid lock of ours holds one of these Redis keys. */
  holdsAnyKey(keys: readonly string[]): boolean {
    for (const key of keys) if (this.#byKey.get(key)?.valid === true) return true;
    return false;
  }

  /** Whether `value` is the value of a lock of ours that is still valid. */
  holds(value: string): boolean {
    return this.#entries.get(value)?.lock.valid === true;
  }

  /** Milliseconds since `lock` was acquired, while it is registered. */
  heldMs(lock: Lock): number | undefined {
    const entry = this.#entries.get(lock.value);
    return entry?.lock === lock ? performance.now() - entry.since : undefined;
  }

  /** Number of registered locks (for leak checks). */
  get size(): number {
    return this.#entries.size;
  }

  #sweep(): void {
    for (const entry of this.#entries.values()) if (!entry.lock.valid) this.delete(entry.lock);
    this.#sweepAt = Math.max(MIN_SWEEP_SIZE, this.#entries.size * 2);
  }
}
