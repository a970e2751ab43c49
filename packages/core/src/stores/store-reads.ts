import type { Cluster, Redis } from "ioredis";
import { NodeRedisStore } from "./node-redis/node-redis-store.js";
import { RedisStore, readsFromReplicas } from "./redis-store.js";
import type { LockStore, StoredKey } from "./store.js";

/**
 * Reads what one instance holds under `key`, without changing it. A `RedisStore` is asked GET and
 * PTTL in one pipeline (one round trip, no script: a read-only ACL user with `+get +pttl` can
 * inspect), in MULTI/EXEC on a Cluster that reads from replicas (`readsFromReplicas`): the lock is
 * read where it is taken, on the slot's master. Any other store through its optional `inspect`.
 */
export function readKey(store: LockStore, key: string): Promise<StoredKey | null> {
  if (typeof store.inspect === "function") return store.inspect(key);
  if (store instanceof RedisStore) return readRedisKey(store.client, key);
  return Promise.reject(new Error(`${store.description ?? "this store"} cannot be inspected: it has no inspect()`));
}

async function readRedisKey(client: Redis | Cluster, key: string): Promise<StoredKey | null> {
  // MULTI is not read-only, so ioredis sends the transaction to the master (a pipeline goes where its first command does)
  const batch = readsFromReplicas(client) ? client.multi() : client.pipeline();
  const replies = await batch.get(key).pttl(key).exec();
  const [get, pttl] = replies ?? [];
  if (!get || !pttl) throw new Error("No reply to GET and PTTL");
  if (get[0]) throw get[0];
  if (pttl[0]) throw pttl[0];
  const value = get[1] as string | null;
  const ttl = Number(pttl[1]);
  // The two commands are not atomic: a key that expired between them (PTTL -2) is free.
  if (value === null || ttl === -2) return null;
  return { value, ttlMs: ttl };
}

/** Reads and releases of a key that keeps changing hands before `deleteKey` deletes it outright. */
const RELEASE_ROUNDS = 3;

/**
 * Deletes `key` on one instance whatever its value. It is released with the value it holds
 * (compare-and-delete), so that the oldest waiter queued on it is handed the key at once. On a
 * Redis store, a key that changed hands between the read and the release (its holder released it,
 * handing it to a waiter) is read and released again: deleted outright, the waiters behind the new
 * holder were woken by nobody and learnt it only at their next poll. Only a key that changes hands
 * in each of `RELEASE_ROUNDS` rounds is deleted outright. Resolves to whether a key was deleted.
 */
export async function deleteKey(store: LockStore, key: string): Promise<boolean> {
  const redis = store instanceof RedisStore || store instanceof NodeRedisStore;
  for (let round = 1; round <= RELEASE_ROUNDS; round++) {
    const stored = await readKey(store, key);
    if (stored === null) return false;
    if ((await store.release([key], stored.value)) > 0) return true;
    if (!redis) return false;
  }
  if (store instanceof NodeRedisStore) return store.forceDelete(key);
  return store instanceof RedisStore && (await store.client.del(key)) > 0;
}

/**
 * Deletes `key` on one instance only if the value it holds is one `wanted` accepts. That value is
 * released as `deleteKey` releases it (compare-and-delete in one step, the oldest waiter handed
 * the key), and nothing else is tried: a key that changed hands after the read is kept. Resolves
 * to `true` when deleted, else to the value kept there (read again after a release that found
 * another), `null` when there is none.
 */
export async function deleteKeyIf(
  store: LockStore,
  key: string,
  wanted: (value: string) => boolean,
): Promise<true | string | null> {
  const stored = await readKey(store, key);
  if (stored === null) return null;
  if (!wanted(stored.value)) return stored.value;
  if ((await store.release([key], stored.value)) > 0) return true;
  return (await readKey(store, key))?.value ?? null;
}
