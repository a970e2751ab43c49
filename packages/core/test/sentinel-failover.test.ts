import { Redis } from "ioredis";
import { createSentinel } from "redis";
import { afterAll, beforeAll, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { type RedisServer, startSentinel, type TestSentinel, until } from "#test-helpers/redis.js";
import { LockLostError, Redlock, type RedlockInstance } from "../src/index.js";

/**
 * Sentinel failovers while locks are held and waited for: a manual one (`SENTINEL FAILOVER`),
 * after which the old master takes writes until the sentinel demotes it, and a master killed.
 * Each test has a Sentinel set of its own (master, replica, sentinel) and waits on the sentinel,
 * not on the CPU: they run at once.
 */
let manual: TestSentinel;
let killed: TestSentinel;
const opened: { isOpen: boolean; destroy(): unknown }[] = [];

beforeAll(async () => {
  // the manual one's sentinel never calls its master down by itself; the other's once it missed
  // 2 s of PINGs (at 300 ms, a loaded machine had it fail over before the test killed anything)
  [manual, killed] = await Promise.all([
    startSentinel("manual", { downAfterMs: 60_000 }),
    startSentinel("killed", { downAfterMs: 2000 }),
  ]);
}, 60_000);

afterAll(async () => {
  for (const client of opened) if (client.isOpen) client.destroy();
  await Promise.all([manual?.stop(), killed?.stop()]);
});

const sentinelOptions = (set: TestSentinel, connectionName?: string) =>
  ({ sentinels: [{ host: "127.0.0.1", port: set.sentinelPort }], name: set.name, connectionName }) as RedlockInstance;

async function nodeRedisSentinel(
  set: TestSentinel,
  nodeAddressMap?: Record<string, { host: string; port: number }>,
): Promise<RedlockInstance> {
  const client = createSentinel({
    name: set.name,
    sentinelRootNodes: [{ host: "127.0.0.1", port: set.sentinelPort }],
    nodeAddressMap,
  });
  client.on("error", () => {});
  opened.push(client);
  return (await client.connect()) as unknown as RedlockInstance;
}

const role = async (server: RedisServer) => ((await server.client().call("ROLE")) as [string])[0];

/** How many connections named `name` `server` has. */
async function named(server: RedisServer, name: string): Promise<number> {
  const list = (await server.client().call("CLIENT", "LIST")) as string;
  return list.split("\n").filter((line) => line.includes(` name=${name} `)).length;
}

/**
 * Resolves once `dlm`'s instance answers a read of `key` with `state`: its connection is up and
 * said who it is (a call meanwhile is unavailable, as after any reconnect: README, one server
 * listed twice).
 */
const answers = (dlm: Redlock, key: string, state: "free" | "held") =>
  until("a Redlock that answers", async () => (await dlm.inspect(key)).state === state);

/** The hand-over channels subscribed to on `server`. */
const handOverChannels = (server: RedisServer) => server.client().pubsub("CHANNELS", "redlock-kit:hand-over:*");

/** Waits until `server` holds what its master wrote so far (a failover to it then loses nothing). */
async function replicated(master: RedisServer): Promise<void> {
  const acknowledged = await master.client().call("WAIT", 1, 10_000);
  if (acknowledged !== 1) throw new Error(`WAIT 1: ${acknowledged} replicas acknowledged, not 1`);
}

it.concurrent("a manual failover: Redlock's clients from Sentinel options follow the switch at once, not once the old master is demoted, which takes writes until then", async ({
  expect,
}) => {
  const { master: old, replica: promoted } = manual;
  const holder = new Redlock([sentinelOptions(manual, "holder")], { retryCount: 0 });
  // it polls once a minute: only a hand-over wakes it before its wait ends
  const waiter = new Redlock([sentinelOptions(manual, "waiter")], { retryDelay: 60_000, retryJitter: 0 });
  const rival = new Redlock([sentinelOptions(manual)], { retryCount: 0 });
  try {
    for (const dlm of [holder, waiter, rival]) await answers(dlm, "manual:held", "free");
    const held = await holder.acquire("manual:held", 60_000);
    const waiting = waiter.acquire("manual:held", 10_000, { wait: 60_000 });
    // awaited below; quit() ends it if a step before fails
    waiting.catch(() => {});
    await until("the waiter queued", async () => (await old.client().exists("manual:held:redlock-kit:waiters")) === 1);
    await replicated(old);

    await manual.failover();
    // the holder's connection, the waiter's and its hand-over subscriber's, subscribed again
    await until(
      "Redlock's connections on the promoted replica, or the old master demoted",
      async () =>
        ((await named(promoted, "holder")) === 1 &&
          (await named(promoted, "waiter")) === 2 &&
          (await handOverChannels(promoted)).length === 1) ||
        (await role(old)) !== "master",
    );
    // they moved first: the sentinel demotes the old master seconds after the switch, and until
    // then a client still connected there locks there, beside the rival's lock on the new master
    expect(await role(old)).toBe("master");
    // a connection that moved says who it is before it votes again
    for (const dlm of [holder, rival]) await answers(dlm, "manual:held", "held");

    const fresh = await holder.acquire("manual:fresh", 60_000);
    // ttls of 10 s in this file's one-shot locks: each answer gets 1 s (10% of the ttl); with 1 s
    // ttls, an answer past 100 ms on a loaded machine was an outage, not the contention asserted
    expect(await rival.lock("manual:fresh", 10_000)).toBeNull();
    expect((await held.extend(60_000)).valid).toBe(true);
    expect(await held.release()).toBe(true);
    // the release on the new master hands the key to the waiter queued before the switch
    const handed = await waiting;
    expect(await promoted.client().get("manual:held")).toBe(handed.value);
    expect(await rival.lock("manual:held", 10_000)).toBeNull();
    expect(await handed.release()).toBe(true);
    expect(await fresh.release()).toBe(true);
  } finally {
    await Promise.all([holder.quit(), waiter.quit(), rival.quit()]);
  }
}, 40_000);

it.concurrent("a master killed while locks are held and waited for (ioredis and node-redis): a lock the replica had extends, releases and is handed to its waiter by the new master; one it never had reports the loss, and a rival takes it", async ({
  expect,
}) => {
  const { master: dead, replica: promoted } = killed;
  const libraries: [string, () => Promise<RedlockInstance>][] = [
    ["io", async () => sentinelOptions(killed)],
    ["nr", () => nodeRedisSentinel(killed)],
  ];
  const rivals: Redlock[] = [];
  const redlocks: Redlock[] = [];
  try {
    const sides = await Promise.all(
      libraries.map(async ([name, connect]) => {
        const [holder, waiter, rival] = [
          new Redlock([await connect()], { retryCount: 0 }),
          // it polls once a minute: only a hand-over wakes it before its wait ends
          new Redlock([await connect()], { retryDelay: 60_000, retryJitter: 0 }),
          new Redlock([await connect()], { retryCount: 0 }),
        ];
        redlocks.push(holder, waiter);
        rivals.push(rival);
        for (const dlm of [holder, waiter, rival]) await answers(dlm, `${name}:kept`, "free");
        const kept = await holder.acquire(`${name}:kept`, 60_000);
        const lost = await holder.acquire(`${name}:lost`, 60_000);
        const waiting = waiter.acquire(`${name}:kept`, 10_000, { wait: 60_000 });
        waiting.catch(() => {});
        await until(
          `${name}'s waiter queued`,
          async () => (await dead.client().exists(`${name}:kept:redlock-kit:waiters`)) === 1,
        );
        return { name, holder, rival, kept, lost, waiting };
      }),
    );
    await replicated(dead);
    // what replication had not delivered when the master died: the lost locks' keys
    const replica = promoted.client();
    await replica.config("SET", "replica-read-only", "no");
    await replica.del("io:lost", "nr:lost");

    await dead.kill();
    await until("the sentinel promotes the replica", async () => (await killed.masterPort()) === promoted.port);
    // each waiter's hand-over subscriber reconnected through the sentinel and subscribed again
    await until(
      "the waiters subscribed on the new master",
      async () => (await handOverChannels(promoted)).length === 2,
    );
    for (const { name, holder, rival, kept, lost, waiting } of sides) {
      // the clients reconnect through the sentinel: once the new master answers a read
      for (const dlm of [holder, rival]) await answers(dlm, `${name}:kept`, "held");
      // the key the new master never had: the loss is told, not hidden
      const extended = await lost.extend(60_000).catch((error: unknown) => error);
      expect(extended).toBeInstanceOf(LockLostError);
      expect(await lost.release()).toBe(false);
      // the documented caveat: replication is asynchronous, a second holder takes it
      expect(await rival.lock(`${name}:lost`, 10_000)).not.toBeNull();

      expect((await kept.extend(60_000)).valid).toBe(true);
      expect(await kept.release()).toBe(true);
      const handed = await waiting;
      expect(await promoted.client().get(`${name}:kept`)).toBe(handed.value);
      expect(await rival.lock(`${name}:kept`, 10_000)).toBeNull();
      expect(await handed.release()).toBe(true);
    }
  } finally {
    await Promise.all([...redlocks, ...rivals].map((dlm) => dlm.quit()));
  }
}, 40_000);

// Before: a node-redis Sentinel's subscriber told nobody once it subscribed on the new master, so a
// release there meanwhile (nobody heard the waiter's channel: its entry popped, the key left free)
// woke the waiter only at its next poll, a minute away; an ioredis one did (its 'ready')
it.concurrent.for(["ioredis", "node-redis"] as const)(
  "%s: a release on the new master before the waiter's subscriber subscribed there is followed, once it has, by the waiter's attempt",
  { timeout: 60_000 },
  async (library, { expect }) => {
    const set = await startSentinel(`moved-${library}`, { downAfterMs: 60_000 });
    const { master: old, replica: promoted } = set;
    // the waiter reaches the promoted replica through a proxy that can hold its subscriber's SUBSCRIBE
    const proxy = await startDelayProxy(promoted.port);
    const mapped = `127.0.0.1:${promoted.port}`;
    const to = { host: "127.0.0.1", port: proxy.port };
    const waiterInstance: RedlockInstance =
      library === "ioredis"
        ? ({ ...(sentinelOptions(set) as object), natMap: { [mapped]: to } } as RedlockInstance)
        : await nodeRedisSentinel(set, { [mapped]: to });
    const holder = new Redlock([sentinelOptions(set, "holder")], { retryCount: 0 });
    const waiter = new Redlock([waiterInstance], { retryDelay: 60_000, retryJitter: 0 });
    const stop = new AbortController();
    try {
      for (const dlm of [holder, waiter]) await answers(dlm, "moved", "free");
      const held = await holder.acquire("moved", 60_000);
      const waiting = waiter.acquire("moved", 10_000, { wait: 60_000, signal: stop.signal });
      waiting.catch(() => {});
      await until("the waiter queued", async () => (await old.client().exists("moved:redlock-kit:waiters")) === 1);
      await replicated(old);

      proxy.holdCommandsWhen = (chunk) => /subscribe/i.test(chunk.toString());
      await set.failover();
      await until("the holder on the promoted replica", async () => (await named(promoted, "holder")) === 1);
      await answers(holder, "moved", "held");
      await until(
        "the subscriber's SUBSCRIBE held on the way to the new master",
        async () => proxy.heldCommandBytes > 0,
      );
      expect(await handOverChannels(promoted)).toEqual([]);
      // nobody listens on the waiter's channel there: the release pops its entry and leaves the key free
      expect(await held.release()).toBe(true);
      expect(await promoted.client().exists("moved", "moved:redlock-kit:waiters")).toBe(0);
      // the waiter's own connection reads from the new master
      await answers(waiter, "moved", "free");

      proxy.releaseCommands();
      const timer = setTimeout(() => stop.abort(new Error("not woken once subscribed again")), 15_000);
      const lock = await waiting.finally(() => clearTimeout(timer));
      expect(lock.valid).toBe(true);
      expect(await promoted.client().get("moved")).toBe(lock.value);
      await lock.release();
    } finally {
      stop.abort();
      await Promise.all([holder.quit(), waiter.quit()]);
      await proxy.close();
      await set.stop();
    }
  },
);

/** Connections subscribed on `set`'s sentinel: the failover detectors of clients from Sentinel options. */
async function detectors(set: TestSentinel): Promise<number> {
  const sentinel = new Redis({ host: "127.0.0.1", port: set.sentinelPort, lazyConnect: true, maxRetriesPerRequest: 0 });
  sentinel.on("error", () => {});
  try {
    const list = (await sentinel.call("CLIENT", "LIST")) as string;
    return list.split("\n").filter((line) => line.includes(" sub=1 ")).length;
  } finally {
    sentinel.disconnect();
  }
}

// Before: ioredis connects a failover detector to a sentinel that went away again only after its
// sentinelReconnectStrategy, a minute by default: a failover meanwhile left the client on the old
// master until its demotion, locking there beside clients on the new master
it.concurrent("a sentinel restarted: the failover detector of a client from Sentinel options listens again at once, and the client follows the next failover before the old master is demoted", async ({
  expect,
}) => {
  const set = await startSentinel("restarted", { downAfterMs: 60_000 });
  const { master: old, replica: promoted } = set;
  const holder = new Redlock([sentinelOptions(set, "holder")], { retryCount: 0 });
  try {
    await answers(holder, "restarted", "free");
    await until("the failover detector subscribed", async () => (await detectors(set)) === 1);
    await set.restartSentinel();
    await until("the failover detector subscribed again", async () => (await detectors(set)) === 1);
    await set.failover();
    await until(
      "the holder on the promoted replica, or the old master demoted",
      async () => (await named(promoted, "holder")) === 1 || (await role(old)) !== "master",
    );
    expect(await role(old)).toBe("master");
    expect(await holder.lock("restarted", 10_000)).not.toBeNull();
    expect(await promoted.client().exists("restarted")).toBe(1);
  } finally {
    await holder.quit();
    await set.stop();
  }
}, 60_000);
