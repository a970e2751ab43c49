import { performance } from "node:perf_hooks";
import { ACQUIRED, type AcquireReply, type LockStore, type ReleaseReply, type StoredKey } from "./store.js";

interface Entry {
  value: string;
  expiresAt: number;
}

/**
 * An in-process store with the same semantics as `RedisStore`: for single-process
 * apps, demos and your own unit tests. It locks nothing across processes.
 *
 * @example
 * const dlm = new Redlock([new MemoryStore()]);
 */
export class MemoryStore implements LockStore {
  readonly description = "memory";
  readonly #entries = new Map<string, Entry>();
  readonly #listeners = new Map<string, Set<(notice: string) => void>>();
  readonly #now: () => number;
  #writesSinceSweep = 0;

  /** @param now monotonic clock in ms, for tests. */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Number of live keys (expired ones are not counted). */
  get size(): number {
    this.#sweep();
    return this.#entries.size;
  }

  async acquire(keys: readonly string[], value: string, ttl: number): Promise<AcquireReply> {
    for (const key of keys) {
      const entry = this.#live(key);
      if (entry && entry.value !== value) {
        return { acquired: false, holderTtl: Math.max(0, Math.ceil(entry.expiresAt - this.#now())) };
      }
    }
    const expiresAt = this.#now() + ttl;
    for (const key of keys) this.#entries.set(key, { value, expiresAt });
    // Expired entries are dropped on access; sweep now and then so unread ones do not pile up.
    if (++this.#writesSinceSweep >= 1000) this.#sweep();
    return ACQUIRED;
  }

  async extend(keys: readonly string[], value: string, ttl: number): Promise<boolean> {
    const entries: Entry[] = [];
    for (const key of keys) {
      const entry = this.#live(key);
      if (!entry || entry.value !== value) return false;
      entries.push(entry);
    }
    const expiresAt = this.#now() + ttl;
    for (const entry of entries) entry.expiresAt = expiresAt;
    return true;
  }

  async release(keys: readonly string[], value: string): Promise<number> {
    return (await this.releaseNotifying(keys, value, "")).released;
  }

  async releaseNotifying(keys: readonly string[], value: string, notice: string): Promise<ReleaseReply> {
    let released = 0;
    let listeners = 0;
    for (const key of keys) {
      if (this.#live(key)?.value === value) {
        this.#entries.delete(key);
        released++;
        const heard = this.#listeners.get(key);
        if (heard === undefined) continue;
        listeners += heard.size;
        if (notice !== "" && keys.length === 1 && heard.size <= 1) continue;
        for (const listener of heard) queueMicrotask(() => listener(notice));
      }
    }
    return { released, listeners };
  }

  async inspect(key: string): Promise<StoredKey | null> {
    const entry = this.#live(key);
    return entry ? { value: entry.value, ttlMs: Math.max(0, Math.ceil(entry.expiresAt - this.#now())) } : null;
  }

  async onRelease(key: string, listener: (notice: string) => void): Promise<() => void> {
    let listeners = this.#listeners.get(key);
    if (!listeners) {
      listeners = new Set();
      this.#listeners.set(key, listeners);
    }
    const set = listeners;
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.#listeners.get(key) === set) this.#listeners.delete(key);
    };
  }

  #live(key: string): Entry | undefined {
    const entry = this.#entries.get(key);
    if (entry && entry.expiresAt <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry;
  }

  #sweep(): void {
    this.#writesSinceSweep = 0;
    const now = this.#now();
    for (const [key, entry] of this.#entries) if (entry.expiresAt <= now) this.#entries.delete(key);
  }
}
