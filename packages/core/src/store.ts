/** What one instance answered to an acquire. */
export type AcquireReply =
  | { readonly acquired: true }
  | {
      readonly acquired: false;
      /** The holder's remaining ttl in ms (-1 when its key has no expiry). */
      readonly holderTtl: number;
    };

export const ACQUIRED: AcquireReply = Object.freeze({ acquired: true });

/** What one instance answered to `releaseNotifying`. */
export interface ReleaseReply {
  /** How many keys held the value and were deleted. */
  readonly released: number;
  /**
   * How many listeners listen for the deleted keys on this instance (this process's own included),
   * summed over the keys; -1 when the store cannot tell.
   */
  readonly listeners: number;
}

/** What `LockStore.inspect` reads: the holder's value and its remaining ttl in ms (-1: no expiry). */
export interface StoredKey {
  readonly value: string;
  readonly ttlMs: number;
}

/**
 * One Redlock instance. Every method is atomic over all `keys` on this instance,
 * and a key that already holds `value` counts as held by the caller.
 * Implementations must not throw synchronously; Redlock bounds every call by its
 * own per-instance timeout, so a store need not time out by itself.
 */
export interface LockStore {
  /** Set every key to `value` with a `ttl` ms expiry, unless another value holds one of them. */
  acquire(keys: readonly string[], value: string, ttl: number): Promise<AcquireReply>;
  /** Reset the expiry of every key to `ttl` ms if all still hold `value`. Resolves to whether it did. */
  extend(keys: readonly string[], value: string, ttl: number): Promise<boolean>;
  /** Delete the keys that hold `value`. Resolves to how many were deleted. */
  release(keys: readonly string[], value: string): Promise<number>;
  /**
   * Throws `RangeError` when this store cannot lock these keys together (a Redis Cluster with keys in
   * different hash slots). Called before any command is sent.
   */
  checkKeys?(keys: readonly string[]): void;
  /**
   * Optional: calls `listener` whenever `key` is released on this instance, so that waiters retry at
   * once instead of after a poll interval. Resolves when listening; the function it resolves to stops.
   */
  onRelease?(key: string, listener: (notice: string) => void): Promise<() => void>;
  /**
   * Optional, with `onRelease`: `release`, announcing each deleted key with `notice` (what the
   * listeners receive; a plain `release` announces ""), and counting who listens. Redlock uses it
   * while waiters in this process wait for the key. A non-empty notice on a single key means the
   * releaser has told its own listener in-process: the announcement is left out if that is the
   * only listener.
   */
  releaseNotifying?(keys: readonly string[], value: string, notice: string): Promise<ReleaseReply>;
  /**
   * Optional, read-only: the value held under `key` and its remaining ttl, or `null` when the key
   * is not set. Used by `Redlock.inspect()` and `forceRelease()`; a `RedisStore` is read with GET
   * and PTTL without it.
   */
  inspect?(key: string): Promise<StoredKey | null>;
  /** A short description for error messages (never credentials). */
  readonly description?: string;
}

export function isLockStore(value: unknown): value is LockStore {
  const v = value as Partial<LockStore> | null;
  return (
    typeof v === "object" &&
    v !== null &&
    typeof v.acquire === "function" &&
    typeof v.extend === "function" &&
    typeof v.release === "function"
  );
}
