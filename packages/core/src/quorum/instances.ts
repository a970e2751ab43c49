import { Cluster, Redis, type RedisOptions } from "ioredis";
import { type NodeRedisClientLike, nodeRedisKind } from "../stores/node-redis/client-shape.js";
import { NodeRedisStore } from "../stores/node-redis/node-redis-store.js";
import { describeClient, RedisStore } from "../stores/redis-store.js";
import { isLockStore, type LockStore } from "../stores/store.js";

/**
 * One Redlock instance: an ioredis client or Cluster, ioredis options, a redis:// URL, a node-redis
 * client, Cluster or Sentinel (the `redis` package, connected or connecting), or any LockStore.
 */
export type RedlockInstance = Redis | Cluster | RedisOptions | string | NodeRedisClientLike | LockStore;

export interface ResolvedInstance {
  readonly store: LockStore;
  /** A client Redlock created and must close in `quit()`. */
  readonly owned: Redis | undefined;
  /**
   * Redlock made the store (for a client, options or a URL): `quit()` closes it. A store it was
   * handed may serve other Redlocks too: `quit()` only ends this one's subscriptions there.
   */
  readonly ownStore: boolean;
}

/**
 * Options for clients Redlock creates itself; the caller's options win. No enableAutoPipelining:
 * RedisStore already sends the commands of one tick to an instance in one write, without the
 * setImmediate delay and per-write Pipeline that auto-pipelining costs every lone command.
 */
const OWNED_CLIENT_DEFAULTS: RedisOptions = {
  // Redlock bounds every call itself; a dead instance should fail queued commands soon, not after 20 retries
  maxRetriesPerRequest: 1,
};

function isIoredisClient(value: unknown): value is Redis | Cluster {
  if (value instanceof Redis || value instanceof Cluster) return true;
  // another installed copy of ioredis
  const v = value as { defineCommand?: unknown; evalsha?: unknown } | null;
  return (
    typeof v === "object" && v !== null && typeof v.defineCommand === "function" && typeof v.evalsha === "function"
  );
}

function createOwned(client: Redis): ResolvedInstance {
  // Without a listener ioredis prints every connection error; failures reach callers as LockUnavailableError.
  client.on("error", () => {});
  return { store: new RedisStore(client), owned: client, ownStore: true };
}

export function resolveInstance(instance: unknown, index: number): ResolvedInstance {
  const name = `instances[${index}]`;
  if (isIoredisClient(instance)) return { store: new RedisStore(instance), owned: undefined, ownStore: true };
  if (nodeRedisKind(instance) !== undefined) {
    return { store: new NodeRedisStore(instance as NodeRedisClientLike), owned: undefined, ownStore: true };
  }
  if (isLockStore(instance)) return { store: instance, owned: undefined, ownStore: false };
  const client = unknownClient(instance);
  if (client !== undefined) throw new TypeError(`${name} is ${client}`);
  if (typeof instance === "string") {
    if (!/^rediss?:\/\//.test(instance)) {
      throw new TypeError(`${name} must be a redis:// or rediss:// URL when given as a string`);
    }
    return createOwned(new Redis(instance, OWNED_CLIENT_DEFAULTS));
  }
  if (typeof instance === "object" && instance !== null && !Array.isArray(instance)) {
    return createOwned(new Redis({ ...OWNED_CLIENT_DEFAULTS, ...(instance as RedisOptions) }));
  }
  throw new TypeError(
    `${name} must be an ioredis client or Cluster, ioredis options, a redis:// URL, a node-redis client or a LockStore, got ${instance === null ? "null" : typeof instance}`,
  );
}

/**
 * What an object with a `sendCommand()` (or a Promise) is when it is no client Redlock can use, or
 * undefined. Such an object must not be read as ioredis options: `new Redis(it)` would be a client of
 * localhost:6379, a vote on another server than the one the caller meant.
 */
function unknownClient(value: unknown): string | undefined {
  const v = value as { sendCommand?: unknown; execute?: unknown; then?: unknown } | null;
  if (typeof v !== "object" || v === null) return undefined;
  if (typeof v.then === "function") {
    return "a Promise (a node-redis connect() not awaited?): give the client itself, e.g. await client.connect() first";
  }
  if (typeof v.sendCommand !== "function") return undefined;
  if (typeof v.execute === "function" && "isOpen" in v) {
    return "a node-redis client pool (createClientPool): each command may run on another of its connections, so a give-back could overtake the acquire it undoes; give a client (createClient()), Cluster or Sentinel";
  }
  if (!("isOpen" in v)) {
    return "a node-redis legacy-mode client (.legacy()) or a client of another library: give the node-redis client (createClient()), Cluster or Sentinel itself, or an ioredis client";
  }
  return "a client Redlock does not know: give an ioredis client or Cluster, or a node-redis (v5, v6) client, Cluster or Sentinel";
}

/** A string that is equal for two instances that would be the same Redis database, or undefined if unknown. */
export function instanceIdentity(resolved: ResolvedInstance): string | undefined {
  const store = resolved.store;
  let description: string | undefined;
  if (store instanceof RedisStore) description = describeClient(store.client) + sentinelsOf(store.client);
  else if (store instanceof NodeRedisStore && store.kind === "client") description = store.description;
  return description === "cluster" ? undefined : description;
}

/**
 * A master name is only unique within its sentinels: two deployments may both call theirs
 * "mymaster". The same deployment reached through other sentinels is left to the run_id check
 * (quorum/server-identity.ts).
 */
function sentinelsOf(client: Redis | Cluster): string {
  const sentinels = (client as Redis).options?.sentinels;
  if (!sentinels) return "";
  return ` via ${sentinels
    .map((s) => `${s.host ?? "localhost"}:${s.port ?? 26379}`)
    .sort()
    .join(",")}`;
}
