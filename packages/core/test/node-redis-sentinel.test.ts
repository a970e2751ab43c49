import { createSentinel } from "redis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { SCRIPT_SHAS, startMonitor } from "#test-helpers/monitor.js";
import { startSentinel, type TestSentinel } from "#test-helpers/redis.js";
import {
  fencedGet,
  fencedSet,
  LockConfigurationError,
  LockUnavailableError,
  NodeRedisStore,
  Redlock,
} from "../src/index.js";

let sentinel: TestSentinel;

beforeAll(async () => {
  // no failover here: a test pauses the master's writes (CLIENT PAUSE WRITE), which holds the
  // sentinel's PUBLISH hello and the PINGs behind it on its connection; at 300 ms it promoted the
  // replica, and the Sentinel client's commands went there, out of the MONITOR's sight
  sentinel = await startSentinel("mymaster", { downAfterMs: 60_000 });
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

it("gives back an acquire its master had not answered after that acquire, never before it (a Sentinel runs a command that waited for its master connection after the ones sent meanwhile)", async () => {
  const client = await nodeRedisSentinel();
  const admin = sentinel.master.client();
  const dlm = new Redlock([client], { retryCount: 0 });
  try {
    // connected, and the server's identity known: what follows is the locks' own commands
    await (await dlm.acquire("nr-sentinel:warm", 5000)).release();
    const monitor = await startMonitor(admin);
    // the writes wait on the server: both attempts time out, and their give-backs follow them
    await admin.client("PAUSE", 60_000, "WRITE");
    let outcomes: unknown[];
    try {
      // two locks in one turn: the second's acquire waits for the master connection the first holds
      outcomes = await Promise.all(
        ["nr-sentinel:a", "nr-sentinel:b"].map((key) => dlm.lock(key, 5000).catch((error: unknown) => error)),
      );
    } finally {
      await admin.client("UNPAUSE");
    }
    expect(outcomes.map((outcome) => outcome instanceof LockUnavailableError)).toEqual([true, true]);
    /** What ran on `key`, in the server's order: "acquire" (SET NX GET) or "release" (the release script). */
    const ranOn = (key: string) =>
      monitor.seen.flatMap(({ source, args }) => {
        if (source === "lua" || !args.includes(key)) return [];
        if (args[0] === "set") return ["acquire"];
        return args[0] === "evalsha" && args[1] === SCRIPT_SHAS.release ? ["release"] : [];
      });
    // both keys' give-backs: they leave in the order their bounds expired, b's first when one turn expired both
    await expect.poll(() => [ranOn("nr-sentinel:a").length, ranOn("nr-sentinel:b").length]).toEqual([2, 2]);
    await monitor.close();
    // before: ["release", "acquire"], and the key kept by nobody for its ttl
    expect(ranOn("nr-sentinel:a")).toEqual(["acquire", "release"]);
    expect(ranOn("nr-sentinel:b")).toEqual(["acquire", "release"]);
    expect(await admin.exists("nr-sentinel:a", "nr-sentinel:b")).toBe(0);
  } finally {
    await dlm.quit();
    await client.close();
  }
});
