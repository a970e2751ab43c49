import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startSentinel, type TestSentinel, until } from "#test-helpers/redis.js";
import { LockConfigurationError, MemoryStore, Redlock } from "../src/index.js";

let sentinel: TestSentinel;

beforeAll(async () => {
  sentinel = await startSentinel();
}, 60_000);

afterAll(async () => {
  await sentinel?.stop();
});

it("locks through ioredis Sentinel options before and after a failover to the replica", async () => {
  const dlm = new Redlock([{ sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name }], {
    retryDelay: 50,
    retryJitter: 50,
  });
  const before = await dlm.acquire("sentinel:a", 5000);
  expect(await sentinel.master.client().get("sentinel:a")).toBe(before.value);
  expect(await before.release()).toBe(true);

  await sentinel.master.kill();
  await until("the sentinel promotes the replica", async () => (await sentinel.masterPort()) === sentinel.replica.port);

  // ioredis asks the sentinel for the new master when it reconnects; `wait` covers that gap
  const after = await dlm.acquire("sentinel:b", 5000, { wait: 10_000 });
  expect(await sentinel.replica.client().get("sentinel:b")).toBe(after.value);
  expect(await after.release()).toBe(true);
  await dlm.quit();
}, 40_000);

it("accepts two Sentinel deployments that both name their master mymaster: their sentinels tell them apart", async () => {
  // the same sentinels and name twice are still refused at once
  const mine = {
    sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }],
    name: sentinel.name,
    lazyConnect: true,
  };
  expect(() => new Redlock([mine, { ...mine }])).toThrow(TypeError);
  const other = await startSentinel(sentinel.name);
  try {
    const dlm = new Redlock([
      { sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name },
      { sentinels: [{ host: "127.0.0.1", port: other.sentinelPort }], name: other.name },
    ]);
    const lock = await dlm.acquire("sentinel:same-name", 10_000);
    const masters = [await sentinel.masterPort(), await other.masterPort()];
    const values = await Promise.all(
      masters.map(async (port) => {
        const client = new Redis({ host: "127.0.0.1", port });
        try {
          return await client.get("sentinel:same-name");
        } finally {
          client.disconnect();
        }
      }),
    );
    expect(values).toEqual([lock.value, lock.value]);
    await lock.release();
    await dlm.quit();
  } finally {
    await other.stop();
  }
}, 60_000);

it("accepts two Sentinel-managed masters as two distinct instances", () => {
  const sentinels = [{ host: "127.0.0.1", port: sentinel.sentinelPort }];
  const dlm = new Redlock([
    { sentinels, name: "one", lazyConnect: true },
    { sentinels, name: "two", lazyConnect: true },
    { sentinels, name: "three", lazyConnect: true },
  ]);
  expect(dlm.quorum).toBe(2);
  return dlm.quit();
});

it("refuses a Sentinel-managed master listed again as a plain client of that server, and a plain client of the sentinel", async () => {
  const sentinels = [{ host: "127.0.0.1", port: sentinel.sentinelPort }];
  const master = await sentinel.masterPort();
  const twice = new Redlock([
    { sentinels, name: sentinel.name },
    { host: "127.0.0.1", port: master },
    new MemoryStore(),
  ]);
  await expect(twice.lock("sentinel:twice", 5000)).rejects.toThrow(
    `instances[1] (127.0.0.1:${master}/0) is the same Redis server as instances[0] (sentinel:${sentinel.name}/0)`,
  );
  const wrong = new Redlock([{ host: "127.0.0.1", port: sentinel.sentinelPort }]);
  await expect(wrong.lock("sentinel:wrong", 5000)).rejects.toThrow(LockConfigurationError);
  await expect(wrong.lock("sentinel:wrong", 5000)).rejects.toThrow(/is a sentinel \(redis_mode:sentinel\)/);
  await Promise.all([twice.quit(), wrong.quit()]);
});

it("force-releases through Sentinel options only the holder given", async () => {
  const dlm = new Redlock([{ sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name }]);
  try {
    await dlm.acquire("sentinel:forced", 60_000);
    const { holder } = await dlm.inspect("sentinel:forced");
    expect(await dlm.forceRelease("sentinel:forced", { holder: "00000000" })).toMatchObject({ deleted: 0, kept: 1 });
    expect(await dlm.forceRelease("sentinel:forced", { holder: holder as string })).toMatchObject({
      deleted: 1,
      kept: 0,
    });
    expect((await dlm.inspect("sentinel:forced")).state).toBe("free");
  } finally {
    await dlm.quit();
  }
}, 40_000);
