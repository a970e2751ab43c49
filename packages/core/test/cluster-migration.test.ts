import type { Cluster, ClusterOptions } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMonitor } from "#test-helpers/monitor.js";
import { startCluster, type TestCluster } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import {
  type AcquireMessage,
  channels,
  LockUnavailableError,
  RedisStore,
  Redlock,
  type RedlockInstance,
} from "../src/index.js";

/**
 * A slot being resharded (`CLUSTER SETSLOT … MIGRATING/IMPORTING`, then `MIGRATE` key by key): the
 * source answers a command on keys it no longer has with ASK, and the target answers a command on
 * several keys of the slot TRYAGAIN unless it has them all.
 */
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startCluster(3);
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

const clients: [string, (options?: ClusterOptions) => Promise<RedlockInstance>][] = [
  ["an ioredis Cluster", async (options) => cluster.client(options)],
  [
    "a node-redis Cluster",
    async () => {
      return (await cluster.nodeRedis().connect()) as unknown as RedlockInstance;
    },
  ],
];

describe.each(clients)("%s while a slot migrates", (name, connect) => {
  const tag = `{migrating-${name.split(" ")[1]}}`;
  const [a, b, c, d] = ["a", "b", "c", "d"].map((key) => `${tag}:${key}`) as [string, string, string, string];

  it("releases a lock whose key is still on the source, one already moved, and one taken meanwhile; no second holder on either side", async () => {
    // two processes: the holder, and a rival with a client of its own
    const dlm = new Redlock([await connect()], { retryCount: 0 });
    const rival = new Redlock([await connect()], { retryCount: 0 });
    // its first call below is one attempt at a 1 s lock: 100 ms for a new client to say who it is
    await warmUp(rival);
    const stays = await dlm.acquire(a, 60_000);
    const moves = await dlm.acquire(b, 60_000);
    const pair = await dlm.acquire([c, d], 60_000);
    const migration = await cluster.migrateSlotOf(tag);
    try {
      await migration.move(b);
      expect(await migration.keys()).toEqual({ source: [a, c, d], target: [b] });
      for (const held of [a, b]) expect(await rival.lock(held, 1000)).toBeNull();
      expect(await rival.lock([c, d], 1000)).toBeNull();
      await Promise.all([stays, moves, pair].map((lock) => lock.extend(60_000)));

      // the release names the lock's keys alone: a queue key it named too, which no node has,
      // made it a multi-key script, answered TRYAGAIN on either side
      expect(await stays.release()).toBe(true);
      expect(await moves.release()).toBe(true);
      expect(await pair.release()).toBe(true);
      expect(await migration.keys()).toEqual({ source: [], target: [] });

      // a key the source does not have is taken on the target (ASK), and released there
      const taken = await dlm.acquire(a, 60_000);
      expect(await migration.keys()).toEqual({ source: [], target: [a] });
      expect(await rival.lock(a, 1000)).toBeNull();
      expect(await taken.release()).toBe(true);
      expect(await migration.keys()).toEqual({ source: [], target: [] });
    } finally {
      await migration.finish();
      await Promise.all([dlm.quit(), rival.quit()]);
    }
  });

  it("refuses a two-key and a fenced acquisition as unavailable (TRYAGAIN), not contention", async () => {
    const dlm = new Redlock([await connect()], { retryCount: 0 });
    const migration = await cluster.migrateSlotOf(tag);
    try {
      // neither node has every key of the command: the target answers TRYAGAIN
      await expect(dlm.lock([a, b], 30_000)).rejects.toBeInstanceOf(LockUnavailableError);
      await expect(dlm.lock(c, 30_000, { fencing: true })).rejects.toBeInstanceOf(LockUnavailableError);
    } finally {
      await migration.finish();
      await dlm.quit();
    }
  });
});

describe("an ioredis Cluster, which sends a command answered TRYAGAIN again by itself", () => {
  const cases: [string, string[], boolean][] = [
    // its give-back names one key: no TRYAGAIN, it ran on the target at once (ASK)
    ["a fenced one-key lock", ["{tryagain-fenced}:job"], true],
    ["a two-key lock", ["{tryagain}:a", "{tryagain}:b"], false],
  ];
  it.each(cases)(
    "%s refused while its slot migrated is given back after its acquisition landed, once the migration ended",
    async (_, keys, fencing) => {
      const key = keys[0] as string;
      // ioredis sends it again every retryDelayOnTryAgain (100 ms), to a random node that redirects
      // it; enough redirections that it outlives the migration
      const dlm = new Redlock([cluster.client({ maxRedirections: 10_000 })], { retryCount: 0, fencing });
      const migration = await cluster.migrateSlotOf(key);
      const monitor = await startMonitor(migration.target.client());
      try {
        await expect(dlm.lock(keys, 30_000)).rejects.toBeInstanceOf(LockUnavailableError);
        await migration.finish();
        // the acquisition and its give-back both ran on the slot's new master
        const scripts = () => monitor.seen.filter(({ args }) => args[0]?.startsWith("eval") && args.includes(key));
        await expect.poll(() => scripts().length).toBe(2);
        // not in that order, the key stayed for its 30 s with nobody to release it
        const left = await migration.keys();
        expect(left.target.filter((name) => !name.endsWith(":redlock-kit:fence"))).toEqual([]);
        expect(left.source).toEqual([]);
      } finally {
        await monitor.close();
        await dlm.quit();
      }
    },
  );

  it("sends a call's next attempt only once its attempt sent again by ioredis was answered: landing after an extension, that attempt cut the key back to its own ttl", async () => {
    const keys = ["{late}:a", "{late}:b"];
    const key = keys[0] as string;
    // the first attempt, answered TRYAGAIN, is sent again by ioredis 3 s later; the call's next one
    // goes 1.5 s after the first (its 500 ms bound, then the retry delay), once the migration ended
    const client = cluster.client({ retryDelayOnTryAgain: 3000 });
    await client.ping();
    await Promise.all(client.nodes("master").map((node) => node.ping()));
    const dlm = new Redlock([client], { instanceTimeout: 500, retryDelay: 1000, retryJitter: 0 });
    // the call's first attempt is timed below: it must not wait (500 ms) for the client to say who it is
    await warmUp(dlm);
    const migration = await cluster.migrateSlotOf(key);
    const target = migration.target.client();
    const monitor = await startMonitor(migration.target.client());
    let attempts = 0;
    const counted = (message: unknown) => {
      attempts = (message as AcquireMessage).attempts;
    };
    channels.acquire.subscribe(counted);
    const refused = async () =>
      Number(/errorstat_TRYAGAIN:count=(\d+)/.exec(await target.info("errorstats"))?.[1] ?? 0);
    const before = await refused();
    try {
      const acquiring = dlm.acquire(keys, 5000, { wait: 20_000 });
      // its outcome is read below; a failed step before that leaves it handled
      acquiring.catch(() => {});
      await expect.poll(refused).toBe(before + 1);
      await migration.finish();
      const lock = await acquiring;
      await lock.extend(60_000);
      // every attempt of the call ran its script on the slot's new master
      const ran = () =>
        new Set(monitor.seen.flatMap(({ script }) => (script?.args.at(-1) === "5000" ? [script] : []))).size;
      await expect.poll(ran).toBe(attempts);
      // the key outlives the validity the extension reported: nobody else can take it before then
      const left = await target.pttl(key);
      expect(left).toBeGreaterThanOrEqual(lock.remainingMs);
    } finally {
      channels.acquire.unsubscribe(counted);
      await monitor.close();
      await dlm.quit();
    }
  });

  it("sends no give-back whose call sent another attempt since: that attempt, with the same value, may hold the keys", async () => {
    const keys = ["{resent}:a", "{resent}:b"];
    const store = new RedisStore(cluster.client({ maxRedirections: 10_000 }));
    const migration = await cluster.migrateSlotOf(keys[0] as string);
    const acquired = store.acquire(keys, "value", 30_000);
    // a give-back told, once the acquisition it waited for was answered, that an attempt followed
    const skipped = store.release(keys, "value", undefined, () => false);
    await migration.finish();
    expect(await acquired).toEqual({ acquired: true });
    expect(await skipped).toBe(0);
    expect(await migration.keys()).toEqual({ source: [], target: keys });
    expect(await store.release(keys, "value")).toBe(2);
    (store.client as Cluster).disconnect();
  });
});
