import { createSentinel } from "redis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startSentinel, type TestSentinel } from "#test-helpers/redis.js";
import { fencedGet, fencedSet, LockConfigurationError, NodeRedisStore, Redlock } from "../src/index.js";

let sentinel: TestSentinel;

beforeAll(async () => {
  sentinel = await startSentinel();
}, 60_000);

afterAll(async () => {
  await sentinel?.stop();
});

async function nodeRedisSentinel() {
  const client = createSentinel({
    name: sentinel.name,
    sentinelRootNodes: [{ host: "127.0.0.1", port: sentinel.sentinelPort }],
  });
  client.on("error", () => {});
  await client.connect();
  return client;
}

it("locks on the master a node-redis Sentinel client (createSentinel) points at", async () => {
  const client = await nodeRedisSentinel();
  try {
    const dlm = new Redlock([client], { retryCount: 0 });
    expect(dlm.stores[0]).toBeInstanceOf(NodeRedisStore);
    expect(dlm.stores[0]?.description).toBe("sentinel");
    const lock = await dlm.acquire("nr-sentinel:a", 5000);
    expect(await sentinel.master.client().get("nr-sentinel:a")).toBe(lock.value);
    expect(await dlm.lock("nr-sentinel:a", 5000)).toBeNull();
    expect(await lock.release()).toBe(true);
    expect(await sentinel.master.client().get("nr-sentinel:a")).toBeNull();
    await dlm.quit();
  } finally {
    await client.close();
  }
});

it("refuses the Sentinel's master listed again as a plain ioredis client", async () => {
  const client = await nodeRedisSentinel();
  try {
    const dlm = new Redlock([client, sentinel.master.client()], { retryCount: 0 });
    const error = await dlm.lock("nr-sentinel:twice", 5000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as Error).message).toMatch(/is the same Redis server as instances\[0\] \(sentinel\)/);
    await dlm.quit();
  } finally {
    await client.close();
  }
});

it("writes with a fence on the master a node-redis Sentinel client points at", async () => {
  const client = await nodeRedisSentinel();
  try {
    expect(await fencedSet(client, "nr-sentinel:doc", "first", "5")).toBe(true);
    expect(await fencedSet(client, "nr-sentinel:doc", "stale", "4")).toBe(false);
    expect(await fencedGet(client, "nr-sentinel:doc")).toEqual({ value: "first", fence: "5" });
    expect(await sentinel.master.client().hgetall("nr-sentinel:doc")).toEqual({ value: "first", fence: "5" });
    await sentinel.master.client().del("nr-sentinel:doc");
  } finally {
    await client.close();
  }
});
