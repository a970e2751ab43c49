import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { startSentinel, startServer, type TestSentinel, until } from "#test-helpers/redis.js";
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

it("keeps a client made from Sentinel options when its failover detector cuts off a connection attempt (ioredis would end it for good)", async () => {
  // The failover detector hears +switch-master on every address of `sentinels`. A Sentinel accepts
  // no PUBLISH from a client, so the second address is a plain redis-server the test publishes on;
  // the first is the real sentinel, behind a proxy that holds the client's question for the master.
  const proxy = await startDelayProxy(sentinel.sentinelPort);
  const announcer = await startServer();
  const dlm = new Redlock([
    {
      sentinels: [
        { host: "127.0.0.1", port: proxy.port },
        { host: "127.0.0.1", port: announcer.port },
      ],
      name: sentinel.name,
    },
  ]);
  const admin = announcer.client();
  const master = new Redis({ port: await sentinel.masterPort(), host: "127.0.0.1" });
  try {
    await (await dlm.acquire("sentinel:cut-off", 5000)).release();
    const detectors = async () => ((await admin.pubsub("NUMSUB", "+switch-master")) as [string, number])[1];
    await until("the failover detector subscribed", async () => (await detectors()) === 1);

    // the client loses its connection; its next attempt asks the sentinel, which hears the question late
    proxy.holdCommandsWhen = (chunk) => chunk.includes("get-master-addr-by-name");
    await master.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    await until("the attempt to ask the sentinel", async () => proxy.heldCommandBytes > 0);
    // a failover is announced meanwhile: the detector disconnects the connector mid-attempt
    await admin.publish("+switch-master", `${sentinel.name} 127.0.0.1 1 127.0.0.1 2`);
    await until("the detector acted", async () => (await detectors()) === 0);
    proxy.releaseCommands();

    const lock = await dlm.acquire("sentinel:cut-off", 5000, { wait: 10_000 });
    expect(await master.get("sentinel:cut-off")).toBe(lock.value);
    expect(await lock.release()).toBe(true);
  } finally {
    await dlm.quit();
    master.disconnect();
    await Promise.all([proxy.close(), announcer.stop()]);
  }
}, 40_000);

it("keeps a waiter's subscriber connection on Sentinel options when the failover detector cuts off its reconnect: the release still wakes it", async () => {
  const proxy = await startDelayProxy(sentinel.sentinelPort);
  const announcer = await startServer();
  const sentinels = [
    { host: "127.0.0.1", port: proxy.port },
    { host: "127.0.0.1", port: announcer.port },
  ];
  const holder = new Redlock([
    { sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name },
  ]);
  // polls once a minute: within its wait only a hand-over message can wake it
  const waiter = new Redlock([{ sentinels, name: sentinel.name }], { retryDelay: 60_000, retryJitter: 0 });
  const admin = announcer.client();
  const master = new Redis({ port: await sentinel.masterPort(), host: "127.0.0.1" });
  try {
    const held = await holder.acquire("sentinel:woken", 30_000);
    const waiting = waiter.acquire("sentinel:woken", 5000, { wait: 10_000 });
    waiting.catch(() => {}); // awaited below; a failure there must not also surface as unhandled
    const detectors = async () => ((await admin.pubsub("NUMSUB", "+switch-master")) as [string, number])[1];
    await until(
      "the waiter subscribed, both its connections watching for failovers",
      async () =>
        (await detectors()) === 2 && (await master.pubsub("CHANNELS", "redlock-kit:hand-over:*")).length === 1,
    );

    proxy.holdCommandsWhen = (chunk) => chunk.includes("get-master-addr-by-name");
    await master.call("CLIENT", "KILL", "TYPE", "pubsub");
    await until("the subscriber's attempt to ask the sentinel", async () => proxy.heldCommandBytes > 0);
    await admin.publish("+switch-master", `${sentinel.name} 127.0.0.1 1 127.0.0.1 2`);
    await until("the detectors acted", async () => (await detectors()) === 0);
    proxy.releaseCommands();
    await until(
      "the waiter subscribed again",
      async () => (await master.pubsub("CHANNELS", "redlock-kit:hand-over:*")).length === 1,
    );

    expect(await held.release()).toBe(true);
    const lock = await waiting;
    expect(await master.get("sentinel:woken")).toBe(lock.value);
    expect(await lock.release()).toBe(true);
  } finally {
    await Promise.all([holder.quit(), waiter.quit()]);
    master.disconnect();
    await Promise.all([proxy.close(), announcer.stop()]);
  }
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
