import type { ClusterOptions } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCluster, type TestCluster } from "#test-helpers/redis.js";
import { Redlock, type RedlockInstance } from "../src/index.js";

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
});
