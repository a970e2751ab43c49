import { type createCluster, RESP_TYPES } from "redis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Monitor, startMonitor } from "#test-helpers/monitor.js";
import { startCluster, type TestCluster } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import {
  type AcquireMessage,
  channels,
  fencedGet,
  fencedSet,
  Lock,
  LockConfigurationError,
  LockUnavailableError,
  NodeRedisStore,
  Redlock,
} from "../src/index.js";

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startCluster(3);
}, 60_000);

afterAll(async () => {
  for (const server of cluster?.servers ?? []) server.resume();
  await cluster?.stop();
});

/** A node-redis Cluster client of the test cluster, not connected yet (closed by `cluster.stop()`). */
const unconnectedCluster = (defaults?: Parameters<typeof createCluster>[0]["defaults"]) => cluster.nodeRedis(defaults);

/** A node-redis Cluster client of the test cluster, connected. */
async function nodeRedisCluster() {
  const client = unconnectedCluster();
  await client.connect();
  return client;
}

const totalKeys = async () => {
  let total = 0;
  for (const server of cluster.servers) total += await server.client().dbsize();
  return total;
};

it("locks single keys on every master through a node-redis Cluster", async () => {
  const client = await nodeRedisCluster();
  const dlm = new Redlock([client], { retryCount: 0 });
  expect(dlm.stores[0]).toBeInstanceOf(NodeRedisStore);
  // a new client says who it is (CLUSTER NODES) first: a 2 s lock's one attempt waits 200 ms for that
  await warmUp(dlm);
  const owners = new Set<number>();
  for (const key of ["a", "b", "c", "order:1", "order:2", "order:3", "x", "y", "z"]) {
    const lock = await dlm.acquire(key, 2000);
    const owner = await cluster.ownerOf(key);
    owners.add(owner.port);
    expect(await owner.client().get(key)).toBe(lock.value);
    expect(await dlm.lock(key, 2000)).toBeNull();
    expect(await lock.release()).toBe(true);
  }
  expect(owners.size).toBe(3);
  expect(await totalKeys()).toBe(0);
  await dlm.quit();
});

it("refuses resources across hash slots with a RangeError before any command, and locks a {hash tag} all or nothing", async () => {
  const dlm = new Redlock([await nodeRedisCluster()], { retryCount: 0 });
  await warmUp(dlm);
  await expect(dlm.lock(["order:1", "order:2"], 2000)).rejects.toThrow(/share a hash slot/);
  const lock = await dlm.acquire(["{order:42}:payment", "{order:42}:stock"], 2000);
  expect(await dlm.lock(["{order:42}:stock", "{order:42}:invoice"], 2000)).toBeNull();
  await lock.release();
  expect(await totalKeys()).toBe(0);
  await dlm.quit();
});

it("issues fences on a Cluster, each counter in its key's slot", async () => {
  const dlm = new Redlock([await nodeRedisCluster()], { retryCount: 0, fencing: true });
  await warmUp(dlm);
  const first = await dlm.acquire("{job}:fenced", 2000);
  await first.release();
  const second = await dlm.acquire("{job}:fenced", 2000);
  expect(BigInt(second.fence as string)).toBe(BigInt(first.fence as string) + 1n);
  await second.release();
  await dlm.quit();
  // the counter never expires: it sits beside the key, in its slot
  const owner = await cluster.ownerOf("{job}:fenced");
  expect(await owner.client().del("{job}:fenced:redlock-kit:fence")).toBe(1);
});

it("lets a waiter poll, with no subscriber connection: a Cluster's PUBLISH counts only one node's subscribers", async () => {
  const dlm = new Redlock([await nodeRedisCluster()], { retryDelay: 20, retryJitter: 10 });
  const holder = await dlm.acquire("cluster-job", 10_000);
  // from here on, an acquire naming the key on its node is the waiter's attempt
  const admin = (await cluster.ownerOf("cluster-job")).client();
  const monitor = await startMonitor(admin);
  const waiting = dlm.acquire("cluster-job", 1000, { wait: 60_000, signal: AbortSignal.timeout(20_000) });
  // refused while the holder held: it polls
  await expect
    .poll(() =>
      monitor.seen.some(({ args }) => (args[0] === "set" || args[0] === "evalsha") && args.includes("cluster-job")),
    )
    .toBe(true);
  await monitor.close();
  admin.disconnect();
  await holder.release();
  const lock = await waiting;
  await lock.release();
  await dlm.quit();
  const owner = await cluster.ownerOf("cluster-job");
  expect(await owner.client().exists("cluster-job:redlock-kit:waiters")).toBe(0);
  expect(await totalKeys()).toBe(0);
});

it("refuses two node-redis Cluster clients of one cluster: every master would vote twice", async () => {
  const clients = [await nodeRedisCluster(), await nodeRedisCluster()];
  // each has said who it is: the 2 s lock's one attempt would wait only 200 ms for both to answer
  for (const client of clients) await warmUp(new Redlock([client]), { quit: true });
  const dlm = new Redlock(clients, { retryCount: 0 });
  const error = await dlm.lock("twice", 2000).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(LockConfigurationError);
  expect((error as Error).message).toBe(
    "instances[1] (cluster) shares a Redis server with instances[0] (cluster): it would vote twice",
  );
  expect(await totalKeys()).toBe(0);
});

it("votes once a Cluster handed in before it was connected, or while it connects, is connected (a call made before waited for a 'ready' that had come)", async () => {
  // never connected when the first call is made: that call is unavailable (503)
  const later = unconnectedCluster();
  const dlm = new Redlock([later], { retryCount: 0 });
  await expect(dlm.lock("early", 2000)).rejects.toBeInstanceOf(LockUnavailableError);
  await later.connect();
  // it votes once connected: the warm-up's attempts fail else, each after 1 s; then a 2 s lock's
  // one attempt need not wait (200 ms) for its CLUSTER NODES
  await warmUp(dlm);
  const lock = await dlm.acquire("early", 2000);
  expect(await lock.release()).toBe(true);
  await dlm.quit();

  // a call made while it connects
  const connectingClient = unconnectedCluster();
  const connecting = connectingClient.connect();
  const other = new Redlock([connectingClient], { retryCount: 0 });
  // it waits for the connection and its CLUSTER NODES: a 60 s lock for up to 1 s (a 2 s one's 200 ms
  // was missed under load, 503), as a warm-up would
  const during = await other.lock("during", 60_000);
  await during?.release();
  await connecting;
  const after = await other.acquire("during", 2000);
  expect(await after.release()).toBe(true);
  await other.quit();
  expect(await totalKeys()).toBe(0);
});

it("reads replies in the default types on a Cluster whose node clients map types (defaults.commandOptions.typeMapping): a script's OK as a Buffer is no refusal", async () => {
  const typeMapping = { [RESP_TYPES.SIMPLE_STRING]: Buffer, [RESP_TYPES.NUMBER]: String };
  // typed without commandOptions in `defaults`, yet node-redis gives them to every node client
  const client = unconnectedCluster({ commandOptions: { typeMapping } } as Parameters<typeof unconnectedCluster>[0]);
  await client.connect();
  const dlm = new Redlock([client], { retryCount: 0 });
  // several resources: the acquire script, which answers OK
  const lock = await dlm.acquire(["{mapped}:a", "{mapped}:b"], 5000);
  const owner = await cluster.ownerOf("{mapped}:a");
  expect(await owner.client().mget("{mapped}:a", "{mapped}:b")).toEqual([lock.value, lock.value]);
  // the extend script answers 1
  await dlm.extend(lock, 20_000);
  expect(await owner.client().pttl("{mapped}:b")).toBeGreaterThan(10_000);
  expect(await lock.release()).toBe(true);
  // the fenced acquire and the write-back (1)
  const fencing = new Redlock([client], { retryCount: 0, fencing: true });
  const fenced = await fencing.acquire("{mapped}:c", 5000);
  expect(await fenced.release()).toBe(true);
  await owner.client().del("{mapped}:c:redlock-kit:fence");
  await Promise.all([dlm.quit(), fencing.quit()]);
  expect(await totalKeys()).toBe(0);
});

it("runs redlock-kit's commands in the order it sends them on a Cluster whose node clients put theirs first (defaults.commandOptions.asap)", async () => {
  const client = unconnectedCluster({ commandOptions: { asap: true } } as Parameters<typeof unconnectedCluster>[0]);
  await client.connect();
  const dlm = new Redlock([client], { retryCount: 0 });
  const other = new Redlock([client], { retryCount: 0 });
  // the release script loaded: answered NOSCRIPT, a release is sent whole behind what followed it
  await (await dlm.acquire("first", 5000)).release();
  const held = await dlm.acquire("first", 5000);
  // both sent before node-redis writes (setImmediate): the release is first on the connection
  const [released, taken] = await Promise.all([held.release(), other.acquire("first", 5000)]);
  expect(released).toBe(true);
  expect(await (await cluster.ownerOf("first")).client().get("first")).toBe(taken.value);
  await taken.release();
  await Promise.all([dlm.quit(), other.quit()]);
  expect(await totalKeys()).toBe(0);
});

it("extends and releases a lock once the signal a Cluster's node clients were given has aborted (defaults.commandOptions.abortSignal), instead of leaving it held until its ttl", async () => {
  const shutdown = new AbortController();
  const client = unconnectedCluster({ commandOptions: { abortSignal: shutdown.signal } } as Parameters<
    typeof unconnectedCluster
  >[0]);
  await client.connect();
  const dlm = new Redlock([client], { retryCount: 0 });
  const lock = await dlm.acquire("aborted", 5000);
  shutdown.abort();
  // before: LockUnavailableError, the vote an AbortError
  await dlm.extend(lock, 20_000);
  expect(await (await cluster.ownerOf("aborted")).client().pttl("aborted")).toBeGreaterThan(10_000);
  expect(await lock.release()).toBe(true);
  await dlm.quit();
  expect(await totalKeys()).toBe(0);
});

it.each(["ASK: the slot migrating, the key not on its source", "MOVED: the slot moved, the client's map not yet told"])(
  "runs a release sent right after an acquire on the same key behind it when node-redis sends both again (%s)",
  async (how) => {
    const client = await nodeRedisCluster();
    const store = new NodeRedisStore(client);
    const key = `{resent-${how.slice(0, 3)}}:k`;
    const migration = await cluster.migrateSlotOf(key);
    const monitor = await startMonitor(migration.target.client());
    try {
      if (how.startsWith("MOVED")) await migration.finish();
      const redirections = async () => {
        const stats = await migration.source.client().info("errorstats");
        return Number(new RegExp(`errorstat_${how.slice(0, how.indexOf(":"))}:count=(\\d+)`).exec(stats)?.[1] ?? 0);
      };
      const before = await redirections();
      // sent in one turn; the acquisition to the source, which answers it with a redirection to the
      // target; the release once it was answered (acquires-first.ts): to the source again after an
      // ASK, to the target after a MOVED (the client read the slots again)
      const [acquired, released] = await Promise.all([store.acquire([key], "v", 30_000), store.release([key], "v")]);
      expect(acquired).toEqual({ acquired: true });
      expect(released).toBe(1);
      expect(await redirections()).toBeGreaterThanOrEqual(before + (how.startsWith("ASK") ? 2 : 1));
      expect(await migration.keys()).toEqual({ source: [], target: [] });
      // both ran on the target, redirected: the acquisition, then the release (sent whole if answered NOSCRIPT)
      await monitor.caughtUp();
      const sent = monitor.seen.filter(({ source, args }) => source !== "lua" && args.includes(key));
      expect(sent.map(({ args }) => args[0])).toEqual(
        sent.length === 2 ? ["set", "evalsha"] : ["set", "evalsha", "eval"],
      );
    } finally {
      if (how.startsWith("ASK")) await migration.finish();
      await monitor.close();
      store.close();
    }
  },
);

/**
 * Moves `key`'s slot (its owner `x`) and a slot of another master to other masters behind `client`'s
 * back (`SETSLOT … NODE` on every master, no key in them): its map of the slots is stale, and a
 * command on `key` goes to `x`. `refresh()` reads a key of the other slot, which its old owner
 * answers MOVED: node-redis then reads the slots again, and sends commands on `key` to `target`
 * (resolves then; the read itself may be waiting on `x`, the other slot's new owner).
 */
async function movedBehind(key: string, client: Awaited<ReturnType<typeof nodeRedisCluster>>) {
  const x = await cluster.ownerOf(key);
  let i = 0;
  while ((await cluster.ownerOf(`moved-other:${i}`)).port === x.port) i++;
  const other = `moved-other:${i}`;
  const moved = await cluster.migrateSlotOf(key);
  await moved.finish();
  await (await cluster.migrateSlotOf(other)).finish();
  const refresh = async () => {
    client.get(other).catch(() => {});
    await expect.poll(() => client.getSlotMaster(moved.slot).port, { timeout: 10_000 }).toBe(moved.target.port);
  };
  return { x, target: moved.target, refresh };
}

/** What ran on `key` in `monitor`'s server, in order: "set" (SET NX GET), "pexpire" (the extend script), "del" (the release script). */
const stepsOn = (monitor: Monitor, key: string) =>
  monitor.seen.flatMap(({ source, args }) => {
    if (!args.includes(key)) return [];
    if (source !== "lua") return args[0] === "set" ? ["set"] : [];
    return args[0] === "pexpire" || args[0] === "del" ? [args[0]] : [];
  });

it("runs a give-back after its acquire when node-redis sends that acquire again to the slot's new owner, answered MOVED by the stalled old owner: sent there directly once the client read the slots again, the give-back ran first", async () => {
  const client = await nodeRedisCluster();
  const store = new NodeRedisStore(client);
  const key = "{moved-give-back}:k";
  const { x, target, refresh } = await movedBehind(key, client);
  const monitor = await startMonitor(target.client());
  x.pause();
  let acquired: Promise<unknown>;
  let released: Promise<number>;
  try {
    // to the old owner, which answers it MOVED once resumed
    acquired = store.acquire([key], "v", 30_000);
    await refresh();
    // the attempt's give-back (Redlock stopped waiting for it)
    released = store.release([key], "v");
  } finally {
    x.resume();
  }
  expect(await acquired).toEqual({ acquired: true });
  // before: 0, run first on the new owner, and the key kept for 30 s with nobody's value
  expect(await released).toBe(1);
  expect(await target.client().exists(key)).toBe(0);
  await monitor.caughtUp();
  expect(stepsOn(monitor, key)).toEqual(["set", "del"]);
  await monitor.close();
  store.close();
});

it("takes no lock that its call's attempt sent again by node-redis can cut short: sent to the slot's stalled old owner, answered MOVED once the call's next attempt won and the lock was extended, it set the key back to its own ttl", async () => {
  const client = await nodeRedisCluster();
  const dlm = new Redlock([client], { retryCount: 2, retryDelay: 1000, retryJitter: 0, instanceTimeout: 500 });
  await warmUp(dlm);
  const key = "{moved-extend}:k";
  const { x, target, refresh } = await movedBehind(key, client);
  const monitor = await startMonitor(target.client());
  let attempts = 0;
  const counted = (message: unknown) => {
    attempts = (message as AcquireMessage).attempts;
  };
  channels.acquire.subscribe(counted);
  x.pause();
  let outcome: unknown;
  try {
    // its first attempt goes to the old owner; the next, 1.5 s later, once the client read the slots
    // again, to the new owner (before, it won there at once)
    const acquiring = dlm.lock(key, 2000).catch((error: unknown) => error);
    await refresh();
    outcome = await acquiring;
    if (outcome instanceof Lock) await outcome.extend(60_000);
  } finally {
    x.resume();
    channels.acquire.unsubscribe(counted);
  }
  // every attempt ran on the new owner, the first sent again there by node-redis, and what followed the last one
  await expect
    .poll(() => {
      const steps = stepsOn(monitor, key);
      return steps.filter((step) => step === "set").length === attempts && steps.at(-1) !== "set";
    })
    .toBe(true);
  if (outcome instanceof Lock) {
    // before: the key left with the first attempt's 2 s, the lock reading ~57 s more
    expect(await target.client().pttl(key)).toBeGreaterThanOrEqual(outcome.remainingMs);
    await outcome.release();
  } else {
    // its attempts wait for the first, which stays unanswered while the old owner does: the
    // call is unavailable, and its give-back runs after them
    expect(outcome).toBeInstanceOf(LockUnavailableError);
    await expect.poll(() => stepsOn(monitor, key).at(-1)).toBe("del");
    expect(await target.client().exists(key)).toBe(0);
  }
  await monitor.close();
  await dlm.quit();
});

it("writes with a fence through a node-redis Cluster, each key on its slot's master, as through an ioredis Cluster", async () => {
  const client = await nodeRedisCluster();
  const ioredis = cluster.client();
  const keys = ["fenced:a", "fenced:b", "fenced:c", "{fenced}:d"];
  // on distinct masters: the script is routed by its key
  const owners = await Promise.all(keys.map(async (key) => (await cluster.ownerOf(key)).port));
  expect(new Set(owners).size).toBeGreaterThan(1);
  const sequence = async (c: Parameters<typeof fencedSet>[0]) => {
    const results: unknown[] = [];
    for (const key of keys) {
      results.push(await fencedSet(c, key, "first", "5"), await fencedSet(c, key, "stale", "5"));
    }
    // every node forgets the script: EVALSHA answers NOSCRIPT on each
    await Promise.all(cluster.servers.map((server) => server.client().script("FLUSH")));
    for (const key of keys) {
      results.push(await fencedSet(c, key, "second", 6n), await fencedGet(c, key));
      results.push(await (await cluster.ownerOf(key)).client().hgetall(key));
    }
    await Promise.all(keys.map(async (key) => (await cluster.ownerOf(key)).client().del(key)));
    return results;
  };
  const onNodeRedis = await sequence(client);
  expect(onNodeRedis.slice(0, 8)).toEqual([true, false, true, false, true, false, true, false]);
  expect(onNodeRedis.slice(8, 11)).toEqual([true, { value: "second", fence: "6" }, { value: "second", fence: "6" }]);
  expect(onNodeRedis).toEqual(await sequence(ioredis));
  expect(await totalKeys()).toBe(0);
});
