import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closeNodeRedis, connectedNodeRedis, type NodeRedisClient } from "#test-helpers/node-redis.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { type LockStore, MemoryStore, NodeRedisStore, RedisStore, Redlock } from "../src/index.js";
import { fingerprint } from "../src/observe/inspect.js";

const redis = useRedisServers(3);
let admins: Redis[] = [];
let nodeRedis: NodeRedisClient[] = [];
const redlocks: Redlock[] = [];

beforeAll(async () => {
  admins = redis.servers.map((server) => server.client());
  nodeRedis = await connectedNodeRedis(redis.servers.map((server) => server.port));
});

afterEach(async () => {
  await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  await Promise.all(admins.map((admin) => admin.flushall()));
});

afterAll(() => closeNodeRedis(nodeRedis));

const redlock = (stores: readonly LockStore[]) => {
  const dlm = new Redlock(stores, { retryCount: 0 });
  redlocks.push(dlm);
  return dlm;
};

/**
 * `store`, whose first release waits for `before()`: forceRelease has read the key by then, so a
 * new owner taken in `before()` takes it between that read and the delete.
 */
function pausedBeforeRelease<S extends LockStore>(store: S, before: () => Promise<void>): S {
  const release = store.release.bind(store);
  let paused = false;
  store.release = async (...args) => {
    if (!paused) {
      paused = true;
      await before();
    }
    return release(...args);
  };
  return store;
}

interface Instances {
  /** The operator's stores, each paused before its first release. */
  operator(before: () => Promise<void>): LockStore[];
  /** The locks' owners' stores, on the same instances. */
  readonly owners: LockStore[];
  /** What each instance holds under `key`. */
  values(key: string): Promise<(string | null)[]>;
}

const onRedis = (operator: Instances["operator"]): Instances => ({
  operator,
  owners: admins.map((admin) => new RedisStore(admin)),
  values: (key) => Promise.all(admins.map((admin) => admin.get(key))),
});

const kinds: [string, () => Instances][] = [
  ["RedisStore", () => onRedis((before) => admins.map((admin) => pausedBeforeRelease(new RedisStore(admin), before)))],
  [
    "NodeRedisStore",
    () => onRedis((before) => nodeRedis.map((client) => pausedBeforeRelease(new NodeRedisStore(client), before))),
  ],
  [
    "MemoryStore",
    () => {
      const memory = new MemoryStore();
      return {
        operator: (before) => [pausedBeforeRelease(memory, before)],
        owners: [memory],
        values: async (key) => [(await memory.inspect(key))?.value ?? null],
      };
    },
  ],
];

describe.each(kinds)("forceRelease() with holder, on %s", (_, setUp) => {
  it("keeps a key that another owner took between its read and its delete", async () => {
    const { operator, owners, values } = setUp();
    const crashed = await redlock(owners).acquire("stuck", 60_000);
    let live: string | undefined;
    let taking: Promise<void> | undefined;
    // every instance's release waits for the one take-over
    const takeOver = () =>
      (taking ??= (async () => {
        await crashed.release();
        live = (await redlock(owners).acquire("stuck", 60_000)).value;
        // its acquire resolves at a quorum: every instance's delete comes after its SET
        await expect.poll(() => values("stuck")).toEqual(owners.map(() => live));
      })());
    const dlm = redlock(operator(takeOver));
    const seen = await dlm.inspect("stuck");
    expect(seen.holder).toBe(fingerprint(crashed.value));

    const result = await dlm.forceRelease("stuck", { holder: seen.holder as string });
    expect(await values("stuck")).toEqual(owners.map(() => live));
    expect(result).toMatchObject({ deleted: 0, kept: owners.length, unknown: 0 });
    expect(result.instances.map(({ holder }) => holder)).toEqual(owners.map(() => fingerprint(live as string)));
  });
});
