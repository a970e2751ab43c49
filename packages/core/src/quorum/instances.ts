import { type Cluster, Redis, type RedisOptions } from "ioredis";
import { knownClient, notAClient } from "../stores/client-library.js";
import { keepConnecting } from "../stores/keep-connecting.js";
import type { NodeRedisClientLike } from "../stores/node-redis/client-shape.js";
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
  // ioredis's disconnect() arms this timer (2 s by default, not unref'd) on the last socket and
  // clears it only on that socket's 'close': between two connection attempts that socket has
  // closed already, and quit() left a timer holding a process whose work was done. quit() sends
  // QUIT first, so nothing is left to wait for once it disconnects.
  disconnectTimeout: 0,
  // With Sentinel options: reconnect as soon as a sentinel announces a new master (+switch-master).
  // After a manual failover (SENTINEL FAILOVER) the old master stays a master, taking writes, until
  // the sentinel demotes it seconds later: a client still connected there locked there while
  // clients that connected since lock on the new master, two holders of one lock.
  failoverDetector: true,
  // The detector's connection to a sentinel that went away (a restart) is opened again after this
  // delay, a minute by ioredis's default: a failover meanwhile went unheard, as without a detector
  sentinelReconnectStrategy: (times: number) => Math.min(times * 100, 2000),
};

const ownedDefaults = (lazyConnect: boolean): RedisOptions =>
  lazyConnect ? { ...OWNED_CLIENT_DEFAULTS, lazyConnect } : OWNED_CLIENT_DEFAULTS;

function createOwned(client: Redis): ResolvedInstance {
  // Without a listener ioredis prints every connection error; failures reach callers as LockUnavailableError.
  client.on("error", () => {});
  // a Sentinel client's failover detector can end it for good during a failover
  keepConnecting(client);
  return { store: new RedisStore(client), owned: client, ownStore: true };
}

/** With `lazyConnect`, a created client connects at its first command (RedlockOptions.lazyConnect). */
export function resolveInstance(instance: unknown, index: number, lazyConnect = false): ResolvedInstance {
  const name = `instances[${index}]`;
  const known = knownClient(instance);
  if (known?.library === "ioredis") return { store: new RedisStore(known.client), owned: undefined, ownStore: true };
  if (known?.library === "node-redis") {
    return { store: new NodeRedisStore(instance as NodeRedisClientLike), owned: undefined, ownStore: true };
  }
  if (isLockStore(instance)) return { store: instance, owned: undefined, ownStore: false };
  const client = notAClient(instance);
  if (client !== undefined) throw new TypeError(`${name} is ${client}`);
  if (typeof instance === "string") {
    if (!/^rediss?:\/\//.test(instance)) {
      throw new TypeError(`${name} must be a redis:// or rediss:// URL when given as a string`);
    }
    return createOwned(new Redis(instance, ownedDefaults(lazyConnect)));
  }
  if (typeof instance === "object" && instance !== null && !Array.isArray(instance)) {
    return createOwned(new Redis({ ...ownedDefaults(lazyConnect), ...(instance as RedisOptions) }));
  }
  throw new TypeError(
    `${name} must be an ioredis client or Cluster, ioredis options, a redis:// URL, a node-redis client or a LockStore, got ${instance === null ? "null" : typeof instance}`,
  );
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
