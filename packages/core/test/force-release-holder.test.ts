import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closeNodeRedis, connectedNodeRedis, type NodeRedisClient } from "#test-helpers/node-redis.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { type LockStore, MemoryStore, NodeRedisStore, RedisStore, Redlock, type RedlockOptions } from "../src/index.js";
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

const redlock = (stores: readonly LockStore[], options: RedlockOptions = { retryCount: 0 }) => {
  const dlm = new Redlock(stores, options);
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

/** A poll interval so long that only a hand-over can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };

describe.each(kinds.slice(0, 2))("forceRelease() without holder, on %s", (_, setUp) => {
  it("hands the key to the next waiter when the lock changed hands between its read and its delete", async () => {
    const { operator, owners, values } = setUp();
    const queued = (count: number) =>
      expect
        .poll(() => Promise.all(admins.map((admin) => admin.zcard("stuck:redlock-kit:waiters"))))
        .toEqual(admins.map(() => count));
    const holder = await redlock(owners).acquire("stuck", 60_000);
    await expect.poll(() => values("stuck")).toEqual(owners.map(() => holder.value));
    // two waiters of other processes (each Redlock its own channel), queued in this order everywhere
    const wait = () =>
      redlock(owners, NO_POLLING).acquire("stuck", 60_000, { wait: 60_000, signal: AbortSignal.timeout(10_000) });
    const first = wait();
    await queued(1);
    const second = wait();
    second.catch(() => {}); // awaited below, once the key is seen handed over
    await queued(2);
    let firstValue: string | undefined;
    let meanwhile: Promise<void> | undefined;
    // the holder releases after the operator read the key: the first waiter is handed it. One run
    // for every instance's release, each waiting for it: run per instance, the second run would wait
    // for the first waiter's key everywhere while the first instance's release already handed it on.
    const releasedMeanwhile = () =>
      (meanwhile ??= (async () => {
        await holder.release();
        const lock = await first;
        firstValue = lock.value;
        await expect.poll(() => values("stuck")).toEqual(owners.map(() => lock.value));
      })());
    const result = await redlock(operator(releasedMeanwhile)).forceRelease("stuck");
    expect(result).toMatchObject({ deleted: owners.length, unknown: 0 });
    // the first waiter's key is deleted as any other holder's, and the second one is woken, as a
    // forced release of the key the operator read would have woken it (not left to poll in the
    // queue: its next try is a minute away, and its signal ends it in 10 s)
    const next = await second;
    expect(next.value).not.toBe(firstValue);
    // it holds a quorum; an instance whose release came once it had one, and so had left its
    // queue, is left free
    const whose = (value: string | null) => (value === null ? "free" : value === next.value ? "next" : "other");
    const held = (await values("stuck")).map(whose);
    expect(held).not.toContain("other");
    expect(held.filter((state) => state === "next").length).toBeGreaterThanOrEqual(Math.floor(owners.length / 2) + 1);
  });
});
