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

  it("announces releases with the notice and counts the listeners; one listener is not told of a hand-over", async () => {
    const heard: string[] = [];
    const stops = await Promise.all([
      store.onRelease?.("a", (notice) => heard.push(`a1:${notice}`)),
      store.onRelease?.("a", (notice) => heard.push(`a2:${notice}`)),
      store.onRelease?.("b", (notice) => heard.push(`b:${notice}`)),
    ]);
    await store.acquire(["a", "b"], "v1", 1000);
    expect(await store.releaseNotifying?.(["a", "b"], "v2", "note")).toEqual({ released: 0, listeners: 0 });
    expect(await store.releaseNotifying?.(["a", "b"], "v1", "note")).toEqual({ released: 2, listeners: 3 });
    await store.acquire(["a"], "v1", 1000);
    expect(await store.release(["a"], "v1")).toBe(1);
    await sleep(50);
    expect(heard.sort()).toEqual(["a1:", "a1:note", "a2:", "a2:note", "b:note"]);
    // a single key with a notice: the releaser told its own listener, so one listener hears nothing
    await store.acquire(["b"], "v1", 1000);
    expect(await store.releaseNotifying?.(["b"], "v1", "mine")).toEqual({ released: 1, listeners: 1 });
    await store.acquire(["a"], "v1", 1000);
    expect(await store.releaseNotifying?.(["a"], "v1", "ours")).toEqual({ released: 1, listeners: 2 });
    await sleep(50);
    expect(heard.sort()).toEqual(["a1:", "a1:note", "a1:ours", "a2:", "a2:note", "a2:ours", "b:note"]);
    for (const stop of stops) stop?.();
    await sleep(50);
    await store.acquire(["a"], "v1", 1000);
    expect(await store.releaseNotifying?.(["a"], "v1", "note")).toEqual({ released: 1, listeners: 0 });
  });
});
