/** What one instance answered to an acquire. */
export type AcquireReply =
  | {
      readonly acquired: true;
      /** A fenced acquisition (`acquireFenced`): each key's fence counter after it, as a decimal string. */
      readonly fences?: readonly string[];
    }
  | {
      readonly acquired: false;
      /**
       * The holder's remaining ttl in ms (-1 when its key has no expiry, -2 when it was gone by the
       * time its ttl was read: the caller is told to try again at once).
       */
      readonly holderTtl: number;
    };

export const ACQUIRED: AcquireReply = Object.freeze({ acquired: true });

/**
 * What one instance answered to a fence write-back (`raiseFences`): `true` when every key still held
 * the lock's value (their counters are raised); otherwise a refusal, either with the remaining ttl
 * of the key's new holder (so that contention can say how long to wait, as an acquire refusal does),
 * or a bare `false` from a store that did not read it.
 */
export type RaiseReply =
  | boolean
  | {
      readonly raised: false;
      /** The key's new holder's remaining ttl in ms (-1 when its key has no expiry, -2 when nobody holds it). */
      readonly holderTtl: number;
    };

/**
 * A waiter's place in the queues of the keys it waits for (one queue per key, on each instance):
 * the release of a key hands it to the oldest entry whose process still listens.
 */
export interface QueueTicket {
  /**
   * The waiting Redlock's hand-over channel (`onHandOver`); no ':' in it. A Redis store names it its
   * own way (instance-channel.ts): a message it hears counts as its instance's hand-over.
   */
  readonly channel: string;
  /** Its place: the same number on every instance, so that every instance hands the key to the same waiter. */
  readonly order: number;
  /** How long a handed key is kept for the waiter to claim it, in ms. */
  readonly holdMs: number;
  /** How long the queue may outlive its last entry's wait, in ms (queues expire; nothing is left behind). */
  readonly keepMs: number;
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
  /**
   * Set every key to `value` with a `ttl` ms expiry, unless another value holds one of them. With a
   * `ticket` (stores that offer `onHandOver`), a refused caller is queued on the held key, and a key
   * that a release handed to `value` counts as free. `budgetMs`: how long Redlock waits for this
   * answer (its per-instance timeout); a store that needs a second round trip to tell how long the
   * holder has left answers the refusal without it rather than past that bound, which would count
   * the refusal as no answer (unavailable, not contention).
   */
  acquire(
    keys: readonly string[],
    value: string,
    ttl: number,
    ticket?: QueueTicket,
    budgetMs?: number,
  ): Promise<AcquireReply>;
  /** Reset the expiry of every key to `ttl` ms if all still hold `value`. Resolves to whether it did. */
  extend(keys: readonly string[], value: string, ttl: number): Promise<boolean>;
  /**
   * Delete the keys that hold `value`, handing each to the oldest waiter queued on it (stores that
   * offer `onHandOver`). Resolves to how many were deleted. With `requeue` (a waiter giving back
   * what a failed attempt took), that waiter is queued again on each deleted key before it is
   * handed on, at its ticket's place. `resend`, for a store that may have to send a script again
   * (a lost script cache): whether that is still wanted; without it, it always is.
   */
  release(keys: readonly string[], value: string, requeue?: QueueTicket, resend?: () => boolean): Promise<number>;
  /**
   * Throws `RangeError` when this store cannot lock these keys together (a Redis Cluster with keys in
   * different hash slots), or, with `fencing`, cannot keep their fence counters beside them. Called
   * before any command is sent.
   */
  checkKeys?(keys: readonly string[], fencing?: boolean): void;
  /**
   * Optional (fencing, docs/fencing.md), phase 1: as `acquire`, and where it takes the keys it also
   * increments each key's fence counter (a key beside it that never expires, never touched by
   * release); the reply carries the counters' new values. A refusal touches no counter.
   */
  acquireFenced?(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply>;
  /**
   * Optional, with `acquireFenced`, phase 2: if every key still holds `value`, raises each key's
   * fence counter to `fences[i]` (never lowers one) and resolves to `true`; otherwise resolves to a
   * refusal, best with the remaining ttl of the key that is no longer `value`'s (`RaiseReply`), and
   * should raise the counters all the same (never lowering one), so that an instance that refused
   * the acquisition is not left behind its fence (docs/fencing.md, "What it survives").
   */
  raiseFences?(keys: readonly string[], value: string, fences: readonly string[]): Promise<RaiseReply>;
  /**
   * Optional: false when this instance must not hand keys over, so that its waiters poll (it may
   * then ignore tickets: nobody needs a place in its queues). A Redis
   * Cluster: PUBLISH answers how many clients of the publishing node heard it, while the cluster
   * delivers the message to subscribers on every node, so the release script cannot tell a waiter
   * that heard of its key from one that is gone (it would take back a key the waiter then holds).
   */
  readonly handsOver?: boolean;
  /**
   * Optional: calls `listener(key, value, server)` whenever a release on this instance hands `key`
   * to a waiter of `channel` whose lock value is `value`. Resolves when listening (rejects when the
   * instance refuses); the function it resolves to stops listening. `server`, from the Redis stores:
   * the run_id of the server the message came from, when its connection said; without it, a
   * hand-over by a Redis store is no grant (speed/message-grant.ts), and the waiter claims.
   * `subscribedAgain`, optional for a store to call: it listens again after it could not for a
   * while (a lost connection subscribed again), so a hand-over meanwhile may have reached nobody;
   * the Redlock's waiters then try once each (docs/waiting.md).
   */
  onHandOver?(
    channel: string,
    listener: (key: string, value: string, server?: string) => void,
    subscribedAgain?: () => void,
  ): Promise<() => void>;
  /**
   * Optional, with `onHandOver`: `release` for one key by the Redlock listening on `channel`, which
   * may ask for two exceptions when the key held `value` and was deleted:
   * - `how.reserve` (speed/retake.ts): unless the head of the key's queue is a waiter of the
   *   releasing Redlock, the key is set to `reserve.value` for `reserve.ttl` ms and nobody is told
   *   (reserved for the releasing process's next call);
   * - `how.grant` (speed/own-grant.ts): when the head of the queue is that waiter of the releasing
   *   Redlock, the key is set to its value for its ttl and its entry removed, without telling it.
   *
   * Resolves to 1 (released and handed over as `release` does, or nobody waits), 0 (the key did not
   * hold `value`), -1 (reserved) or -2 (granted).
   */
  releaseOne?(key: string, value: string, channel: string, how: OneKeyRelease): Promise<number>;
  /**
   * Optional, with `onHandOver`: removes a waiter that stopped waiting (it acquired, or gave up) from
   * the queues of `keys`. An attempt of `value` sent before must not queue it again after this, nor
   * a `release` with `requeue` (a script re-sent on NOSCRIPT would run behind the removal).
   */
  leaveQueue?(keys: readonly string[], value: string, ticket: QueueTicket): Promise<void>;
  /**
   * Optional, read-only: the value held under `key` and its remaining ttl, or `null` when the key
   * is not set. Used by `Redlock.inspect()` and `forceRelease()`; a `RedisStore` is read with GET
   * and PTTL without it.
   */
  inspect?(key: string): Promise<StoredKey | null>;
  /** A short description for error messages (never credentials). */
  readonly description?: string;
}

/** What a one-key release by a listening Redlock asks beyond `release` (`LockStore.releaseOne`). */
export interface OneKeyRelease {
  /** Set the key to this value for this ttl unless the head of its queue is a waiter of the releasing Redlock. */
  readonly reserve?: { readonly value: string; readonly ttl: number };
  /** Give the key to this waiter of the releasing Redlock when it heads the queue. */
  readonly grant?: { readonly value: string; readonly ttl: number };
  /**
   * `false`: no waiter of the releasing Redlock can be in the key's queue, so a reservation needs
   * no look at the queue's head (a store may skip reading it). Omitted: one may be.
   */
  readonly ownQueued?: boolean;
}

/** The store can issue fencing tokens. */
export function canFence(store: LockStore): boolean {
  return typeof store.acquireFenced === "function" && typeof store.raiseFences === "function";
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
