import { createSentinel } from "redis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { SCRIPT_SHAS, startMonitor } from "#test-helpers/monitor.js";
import { startSentinel, type TestSentinel } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
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

async function nodeRedisSentinel(
  nodeAddressMap?: Record<string, { host: string; port: number }>,
  nodeClientOptions?: { username: string; password: string },
) {
  const client = createSentinel({
    name: sentinel.name,
    sentinelRootNodes: [{ host: "127.0.0.1", port: sentinel.sentinelPort }],
    nodeAddressMap,
    nodeClientOptions,
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
    // its one attempt at a 5 s lock waits at most 500 ms for the new client to say who it is
    await warmUp(dlm);
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
    const direct = sentinel.master.client();
    // each says who it is first, on its own: together they are refused
    await Promise.all([client, direct].map((given) => warmUp(new Redlock([given]), { quit: true })));
    const dlm = new Redlock([client, direct], { retryCount: 0 });
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
    await warmUp(dlm);
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

// Before: the Sentinel's pub/sub connection, lost and opened again by node-redis, told nobody once
// it had subscribed again, so a release meanwhile (nobody heard the waiter's channel: its entry
// popped, the key left free) woke the waiter only at its next poll, a minute away
/** A release while the waiter's Sentinel subscriber was cut off, then its wait: it must be woken once subscribed again. */
async function releaseWhileSubscriberDown({
  user,
  probeLost = false,
}: {
  user?: { username: string; password: string };
  probeLost?: boolean;
} = {}) {
  const admin = sentinel.master.client();
  // the waiter reaches the master through a proxy that can hold its subscriber's SUBSCRIBE
  const proxy = await startDelayProxy(sentinel.master.port);
  const client = await nodeRedisSentinel(
    { [`127.0.0.1:${sentinel.master.port}`]: { host: "127.0.0.1", port: proxy.port } },
    user,
  );
  const waiter = new Redlock([client], { retryDelay: 60_000, retryJitter: 0 });
  const holder = new Redlock([sentinel.master.client()], { retryCount: 0 });
  const stop = new AbortController();
  const channels = async () => (await admin.pubsub("CHANNELS", "redlock-kit:hand-over:*")).length;
  try {
    const held = await holder.acquire("nr-sentinel:blip", 60_000);
    const waiting = waiter.acquire("nr-sentinel:blip", 10_000, { wait: 60_000, signal: stop.signal });
    waiting.catch(() => {});
    await expect.poll(() => admin.zcard("nr-sentinel:blip:redlock-kit:waiters")).toBe(1);
    await expect.poll(channels).toBe(1);
    if (probeLost) {
      // lost once before (a flapping network): the SUBSCRIBEs sent again and the probe sent on that
      // loss behind them wait in the proxy, then that connection is lost too
      proxy.holdCommandsWhen = (chunk) => chunk.includes("probe");
      proxy.resetAll();
      await expect.poll(() => proxy.heldCommandBytes).toBeGreaterThan(0);
    }
    // every connection through the proxy drops; the pub/sub one's SUBSCRIBE waits in the proxy
    proxy.holdCommandsWhen = (chunk) => /subscribe/i.test(chunk.toString());
    proxy.resetAll();
    await expect.poll(() => proxy.heldCommandBytes).toBeGreaterThan(0);
    expect(await channels()).toBe(0);
    // nobody listens on the waiter's channel: the release pops its entry and leaves the key free
    expect(await held.release()).toBe(true);
    expect(await admin.exists("nr-sentinel:blip", "nr-sentinel:blip:redlock-kit:waiters")).toBe(0);

    proxy.releaseCommands();
    await expect.poll(channels).toBe(1);
    const timer = setTimeout(() => stop.abort(new Error("not woken once subscribed again")), 15_000);
    const lock = await waiting.finally(() => clearTimeout(timer));
    expect(await admin.get("nr-sentinel:blip")).toBe(lock.value);
    await lock.release();
  } finally {
    stop.abort();
    await Promise.all([waiter.quit(), holder.quit()]);
    await client.close().catch(() => {});
    await proxy.close();
  }
}

it("a release while the subscriber's pub/sub connection was down is followed, once it subscribed again, by the waiter's attempt", async () => {
  await releaseWhileSubscriberDown();
}, 40_000);

// Before: the loss's 'error' came while the first probe waited for its answer and sent no other;
// that probe, lost with the connection, told nobody
it("a release while the pub/sub connection was lost again, its probe unanswered, is followed by the waiter's attempt", async () => {
  await releaseWhileSubscriberDown({ probeLost: true });
}, 40_000);

// Before: the probe subscribed to redlock-kit:subscriber-probe, outside the channels the README's
// least-privilege user may use (&redlock-kit:hand-over:*): refused (NOPERM), it told nobody
it("wakes the waiter once subscribed again for a Redis user with only the README's permissions", async () => {
  const admin = sentinel.master.client();
  await admin.call(
    "ACL",
    ...["SETUSER", "nr-locker", "reset", "on", ">lockpw", "~*", "resetchannels", "&redlock-kit:hand-over:*"],
    ...["+eval", "+evalsha", "+get", "+set", "+pttl", "+pexpire", "+del", "+info"],
    ...["+exists", "+zadd", "+zrem", "+zpopmin", "+zrange", "+publish", "+pubsub|numsub", "+subscribe", "+unsubscribe"],
  );
  try {
    await releaseWhileSubscriberDown({ user: { username: "nr-locker", password: "lockpw" } });
  } finally {
    await admin.call("ACL", "DELUSER", "nr-locker");
  }
}, 40_000);
