import { beforeEach, describe, expect, it } from "vitest";
import { sleep, useRedisServers } from "../../../test/helpers/redis-servers.js";
import { type LockStore, MemoryStore, RedisStore } from "../src/index.js";

const redis = useRedisServers(1);

/** One contract, run against every store: MemoryStore must behave exactly as RedisStore. */
const stores: [string, () => LockStore][] = [
  ["RedisStore", () => new RedisStore(redis.servers[0]?.client() as never)],
  ["MemoryStore", () => new MemoryStore()],
];

describe.each(stores)("%s conformance", (_, create) => {
  let store: LockStore;
  beforeEach(async () => {
    store = create();
    if (store instanceof RedisStore) await store.client.flushall();
  });

  it("acquires free keys and refuses them to another value with the holder's remaining ttl", async () => {
    expect(await store.acquire(["k"], "v1", 1000)).toEqual({ acquired: true });
    const refused = await store.acquire(["k"], "v2", 1000);
    expect(refused.acquired).toBe(false);
    if (!refused.acquired) {
      expect(refused.holderTtl).toBeGreaterThan(500);
      expect(refused.holderTtl).toBeLessThanOrEqual(1000);
    }
  });

  it("treats keys already holding the same value as acquired", async () => {
    await store.acquire(["k"], "v1", 1000);
    expect((await store.acquire(["k"], "v1", 1000)).acquired).toBe(true);
  });

  it("is all or nothing over several keys", async () => {
    await store.acquire(["b"], "other", 1000);
    expect((await store.acquire(["a", "b"], "v1", 1000)).acquired).toBe(false);
    expect(await store.release(["a"], "v1")).toBe(0);
    expect((await store.acquire(["a"], "v2", 1000)).acquired).toBe(true);
  });

  it("expires keys after the ttl", async () => {
    await store.acquire(["k"], "v1", 50);
    await sleep(80);
    expect((await store.acquire(["k"], "v2", 1000)).acquired).toBe(true);
  });

  it("extends only keys that all still hold the value", async () => {
    await store.acquire(["a", "b"], "v1", 100);
    expect(await store.extend(["a", "b"], "v1", 1000)).toBe(true);
    await sleep(150);
    expect((await store.acquire(["a"], "v2", 1000)).acquired).toBe(false);
    expect(await store.extend(["a", "b"], "v2", 1000)).toBe(false);
    expect(await store.extend(["missing"], "v1", 1000)).toBe(false);
  });

  it("releases only keys holding the value and counts them", async () => {
    await store.acquire(["a", "b"], "v1", 1000);
    expect(await store.release(["a", "b"], "v2")).toBe(0);
    expect(await store.release(["a", "b"], "v1")).toBe(2);
    expect(await store.release(["a", "b"], "v1")).toBe(0);
    expect((await store.acquire(["a", "b"], "v2", 1000)).acquired).toBe(true);
  });
});
