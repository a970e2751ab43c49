import { EventEmitter } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { createClientPool, RESP_TYPES } from "redis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { closeNodeRedis, connectedNodeRedis, type NodeRedisClient, nodeRedisClient } from "#test-helpers/node-redis.js";
import { heldByQuorum, queuedOnQuorum, queueSizes } from "#test-helpers/quorum.js";
import { startServer, useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import {
  LockConfigurationError,
  LockContentionError,
  LockUnavailableError,
  NodeRedisStore,
  Redlock,
} from "../src/index.js";

const redis = useRedisServers(3);
let clients: NodeRedisClient[] = [];
let admins: Redis[] = [];
const extra: NodeRedisClient[] = [];
const redlocks: Redlock[] = [];

beforeAll(async () => {
  clients = await connectedNodeRedis(redis.servers.map((server) => server.port));
  admins = redis.servers.map((server) => server.client());
  // the first test's one attempt at a 5 s lock waits 500 ms for the new clients to say who they are
  await warmUp(new Redlock(clients), { quit: true });
});

afterEach(async () => {
  await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  closeNodeRedis(extra.splice(0));
  await Promise.all(admins.map((admin) => admin.flushall()));
});

afterAll(() => closeNodeRedis(clients));

const redlock = (...args: ConstructorParameters<typeof Redlock>) => {
  const dlm = new Redlock(...args);
  redlocks.push(dlm);
  return dlm;
};

/**
 * A node-redis client of server `index` that the test owns (closed after it). Its first call waits
 * for it to say who it is at most the per-instance timeout (500 ms for a 5 s lock): a test whose
 * first call on it is one attempt warms it first (test/helpers/warm-up.ts).
 */
const ownClient = (index: number, options?: Parameters<typeof nodeRedisClient>[1]) => {
  const client = nodeRedisClient(redis.servers[index]?.port as number, options);
  extra.push(client);
  return client;
};

const queuesOf = (key: string) => queueSizes(admins, key);
/** One waiter in line on a quorum of instances: what a release hands the key over by. */
const waiterInLine = (sizes: number[]) => queuedOnQuorum(sizes, 1);

/**
 * Once the commands already sent on `on` have landed. Two PINGs: a script answered NOSCRIPT (a
 * server's first call of it) is sent whole once that answer is read, which may be after a first
 * PING was sent; it is queued before that PING's answer is read, so ahead of the second.
 */
const landed = async (on: readonly NodeRedisClient[] = clients) => {
  await Promise.all(on.map((client) => client.ping()));
  await Promise.all(on.map((client) => client.ping()));
};

/** The values under `key`, once the commands already sent on the node-redis clients have landed. */
const valuesOf = async (key: string) => {
  await landed();
  return Promise.all(admins.map((admin) => admin.get(key)));
};

describe("node-redis clients as Redlock instances", () => {
  it("locks, refuses another owner with the holder's ttl, extends and releases on every instance", async () => {
    const dlm = redlock(clients, { retryCount: 0 });
    expect(dlm.stores.every((store) => store instanceof NodeRedisStore)).toBe(true);
    const lock = await dlm.acquire("nr:a", 5000);
    expect(await valuesOf("nr:a")).toEqual([lock.value, lock.value, lock.value]);
    const refused = await dlm.acquire("nr:a", 1000).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(LockContentionError);
    expect((refused as LockContentionError).retryAfterMs).toBeGreaterThan(1000);
    await dlm.extend(lock, 20_000);
    // a quorum answered; the third extension may still be on its way
    await landed();
    expect(Math.min(...(await Promise.all(admins.map((admin) => admin.pttl("nr:a")))))).toBeGreaterThan(10_000);
    expect(await dlm.unlock(lock)).toBe(true);
    expect(await valuesOf("nr:a")).toEqual([null, null, null]);
  });

  it("locks several resources all or nothing", async () => {
    const dlm = redlock(clients, { retryCount: 0 });
    await admins[0]?.set("nr:b", "other", "PX", 5000);
    await admins[1]?.set("nr:b", "other", "PX", 5000);
    expect(await dlm.lock(["nr:a", "nr:b"], 5000)).toBeNull();
    expect(await valuesOf("nr:a")).toEqual([null, null, null]);
    const lock = await dlm.acquire(["nr:a", "nr:c"], 5000);
    expect(await valuesOf("nr:c")).toEqual([lock.value, lock.value, lock.value]);
    await lock.release();
  });

  it("recovers from SCRIPT FLUSH: EVALSHA answered NOSCRIPT is sent again whole", async () => {
    const dlm = redlock(clients, { retryCount: 0 });
    // multi-resource locks go through the acquire script
    await (await dlm.acquire(["nr:a", "nr:b"], 5000)).release();
    await Promise.all(admins.map((admin) => admin.script("FLUSH")));
    const lock = await dlm.acquire(["nr:a", "nr:b"], 5000);
    // a quorum answered; the third instance's EVAL may still be on its way
    expect((await valuesOf("nr:b")).filter((value) => value === lock.value).length).toBeGreaterThanOrEqual(2);
    expect(await lock.release()).toBe(true);
    expect(await valuesOf("nr:b")).toEqual([null, null, null]);
  });

  it("issues increasing fences through node-redis", async () => {
    const dlm = redlock(clients, { retryCount: 0, fencing: true });
    const first = await dlm.acquire("nr:fenced", 5000);
    await first.release();
    const second = await dlm.acquire("nr:fenced", 5000);
    expect(BigInt(second.fence as string)).toBeGreaterThan(BigInt(first.fence as string));
    await second.release();
  });

  it("inspects and force-releases through GET, PTTL and DEL", async () => {
    const dlm = redlock(clients, { retryCount: 0 });
    const lock = await dlm.acquire("nr:seen", 5000);
    const seen = await dlm.inspect("nr:seen");
    expect(seen.state).toBe("held");
    expect(seen.ours).toBe(true);
    expect(lock.valid).toBe(true);
    expect(seen.ttlMs).toBeGreaterThan(0);
    expect(seen.ttlMs).toBeLessThanOrEqual(5000);
    expect(seen.instances.map((instance) => instance.description)).toEqual(
      redis.servers.map((server) => `127.0.0.1:${server.port}/0`),
    );
    const forced = await dlm.forceRelease("nr:seen");
    expect(forced.deleted).toBe(3);
    expect(await valuesOf("nr:seen")).toEqual([null, null, null]);
  });

  it("wakes a waiter by the release's hand-over, not by its poll interval", async () => {
    const dlm = redlock(clients, { retryDelay: 60_000, retryJitter: 0 });
    const holder = await dlm.acquire("nr:job", 10_000);
    const waiting = dlm.acquire("nr:job", 5000, { wait: 60_000, signal: AbortSignal.timeout(20_000) });
    // queued on a quorum before the release, which then hands the key over (a waiter not yet in
    // line would find the key free and prove nothing)
    await expect.poll(() => queuesOf("nr:job")).toSatisfy(waiterInLine);
    await holder.release();
    const lock = await waiting;
    // a hand-over, like any lock, is promised on a quorum: ours there, nobody else's anywhere
    expect(await valuesOf("nr:job")).toSatisfy((values: (string | null)[]) => heldByQuorum(values, lock.value));
    await lock.release();
  });

  it("closes the subscriber connection it opened on quit(), and leaves the clients it was given open", async () => {
    const connections = async () => Number((await admins[0]?.info("clients"))?.match(/connected_clients:(\d+)/)?.[1]);
    const before = await connections();
    const dlm = new Redlock(clients, { retryDelay: 60_000, retryJitter: 0 });
    const holder = await dlm.acquire("nr:sub", 10_000);
    const waiting = dlm.acquire("nr:sub", 5000, { wait: 60_000, signal: AbortSignal.timeout(20_000) });
    await expect.poll(connections, { message: "one subscriber connection per instance" }).toBe(before + 1);
    await holder.release();
    await (await waiting).release();
    await dlm.quit();
    await expect.poll(connections).toBe(before);
    expect(clients.every((client) => client.isOpen)).toBe(true);
  });
});

describe("node-redis clients with a type mapping", () => {
  const typeMapping = { [RESP_TYPES.SIMPLE_STRING]: Buffer, [RESP_TYPES.NUMBER]: String };
  it.each([
    ["commandOptions.typeMapping", (index: number) => ownClient(index, { commandOptions: { typeMapping } }).connect()],
    [
      "withTypeMapping()",
      async (index: number) =>
        (await ownClient(index).connect()).withTypeMapping(typeMapping) as unknown as NodeRedisClient,
    ],
  ])(
    "reads replies in the default types (%s): a script's OK mapped to a Buffer is no refusal, a 1 mapped to a string no lost extension",
    async (_, open) => {
      const mapped = await Promise.all(redis.servers.map((_, index) => open(index)));
      const dlm = redlock(mapped, { retryCount: 0 });
      await warmUp(dlm);
      // several resources: the acquire script, which answers OK
      const lock = await dlm.acquire(["nr:a", "nr:b"], 5000);
      expect(await valuesOf("nr:b")).toEqual([lock.value, lock.value, lock.value]);
      // the extend script answers 1
      await dlm.extend(lock, 20_000);
      expect(await lock.release()).toBe(true);
      await landed(mapped);
      expect(await valuesOf("nr:a")).toEqual([null, null, null]);
    },
  );
});

describe("node-redis clients that put their commands first (asap)", () => {
  it.each([
    ["commandOptions.asap", (index: number) => ownClient(index, { commandOptions: { asap: true } }).connect()],
    ["asap()", async (index: number) => (await ownClient(index).connect()).asap() as unknown as NodeRedisClient],
  ])(
    "run redlock-kit's commands in the order it sends them (%s): a lock released and asked for in one turn is taken",
    async (_, open) => {
      const first = await Promise.all(redis.servers.map((_, index) => open(index)));
      const dlm = redlock(first, { retryCount: 0 });
      const other = redlock(first, { retryCount: 0 });
      await warmUp(dlm);
      // the release script loaded: answered NOSCRIPT, a release is sent whole behind what followed it
      await (await dlm.acquire("nr:asap", 5000)).release();
      const held = await dlm.acquire("nr:asap", 5000);
      // both sent before node-redis writes (setImmediate): the release is first on every connection
      const [released, taken] = await Promise.all([held.release(), other.acquire("nr:asap", 5000)]);
      expect(released).toBe(true);
      await landed(first);
      expect(await valuesOf("nr:asap")).toEqual([taken.value, taken.value, taken.value]);
      await taken.release();
    },
  );
});

describe("node-redis clients whose commands an abort signal cancels (withAbortSignal, commandOptions.abortSignal)", () => {
  /** Clients of the three servers whose commands `signal` cancels once aborted, and the clients they were made from. */
  const cancellable = async (how: "withAbortSignal()" | "commandOptions.abortSignal", signal: AbortSignal) => {
    const plain = await Promise.all(
      redis.servers.map((_, index) =>
        ownClient(
          index,
          how === "withAbortSignal()" ? undefined : { commandOptions: { abortSignal: signal } },
        ).connect(),
      ),
    );
    const given = how === "withAbortSignal()" ? plain.map((client) => client.withAbortSignal(signal)) : plain;
    await warmUp(new Redlock(given as unknown as NodeRedisClient[]), { quit: true });
    return { given: given as unknown as NodeRedisClient[], plain };
  };

  it.each(["withAbortSignal()", "commandOptions.abortSignal"] as const)(
    "extend and release a lock once the client's signal has aborted (%s: an app shutting down), instead of leaving it held until its ttl",
    async (how) => {
      const shutdown = new AbortController();
      const { given, plain } = await cancellable(how, shutdown.signal);
      const dlm = redlock(given, { retryCount: 0 });
      const lock = await dlm.acquire("nr:abort", 5000);
      shutdown.abort();
      // before: LockUnavailableError, each instance's vote an AbortError
      await dlm.extend(lock, 20_000);
      expect(await lock.release()).toBe(true);
      // pinged without the aborted signal, which the clients made with it carry
      await landed(plain.map((client) => client.withAbortSignal(undefined as never)));
      expect(await valuesOf("nr:abort")).toEqual([null, null, null]);
    },
  );

  it("answer contention for a held lock once the client's signal has aborted, and still end a wait at redlock-kit's own per-call signal", async () => {
    const shutdown = new AbortController();
    const { given } = await cancellable("withAbortSignal()", shutdown.signal);
    shutdown.abort();
    const holder = await redlock(clients, { retryCount: 0 }).acquire("nr:abort-wait", 60_000);
    // before: LockUnavailableError, each instance's vote an AbortError
    await expect(redlock(given, { retryCount: 0 }).acquire("nr:abort-wait", 5000)).rejects.toBeInstanceOf(
      LockContentionError,
    );
    const waiting = new AbortController();
    const waiter = redlock(given, { retryCount: 1000, retryDelay: 50 });
    const outcome = waiter.acquire("nr:abort-wait", 5000, { signal: waiting.signal }).catch((error: unknown) => error);
    waiting.abort(new Error("given up"));
    expect(await outcome).toEqual(new Error("given up"));
    // a wait (hand-over subscriber: a duplicate of the client, signal included) served by the release
    const served = redlock(given, { retryCount: 1000, retryDelay: 60_000 }).acquire("nr:abort-wait", 5000);
    await expect.poll(() => queuesOf("nr:abort-wait")).toSatisfy(waiterInLine);
    await holder.release();
    const taken = await served;
    expect(await valuesOf("nr:abort-wait")).toEqual([taken.value, taken.value, taken.value]);
    await taken.release();
  });
});

/**
 * `client`, whose duplicates' `destroy()` throws `ClientClosedError` once closed, as @redis/client
 * 5.x and 6.0 do (6.3 returns quietly; the peer range is `>=5.0.0 <7`).
 */
function destroyThrowsOnceClosed(client: NodeRedisClient): NodeRedisClient {
  const duplicate = client.duplicate.bind(client);
  client.duplicate = ((...args: Parameters<typeof duplicate>) => {
    const connection = duplicate(...args);
    const destroy = connection.destroy.bind(connection);
    connection.destroy = () => {
      if (!connection.isOpen) throw new Error("The client is closed");
      destroy();
    };
    return connection;
  }) as typeof client.duplicate;
  return client;
}

describe("node-redis subscriber connections", () => {
  it("closes them without an unhandled rejection on a client whose destroy() throws once closed (5.x, 6.0)", async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on("unhandledRejection", onRejection);
    try {
      const strict = await Promise.all(
        redis.servers.map(async (_, index) => destroyThrowsOnceClosed(await ownClient(index).connect())),
      );
      const pubsubClients = async () =>
        Promise.all(admins.map(async (admin) => String(await admin.call("CLIENT", "LIST", "TYPE", "pubsub")).trim()));
      const dlm = redlock(strict, { retryDelay: 60_000, retryJitter: 0 });
      // its own Redlock: a warm-up's retry on this one would wait its 60 s retryDelay
      await warmUp(new Redlock(strict), { quit: true });
      const holder = await redlock(clients).acquire("nr:strict", 10_000);
      const waiting = dlm.acquire("nr:strict", 5000, { wait: 60_000, signal: AbortSignal.timeout(20_000) });
      // in line (so subscribed) before the release: the subscriber connections are what quit() closes
      await expect.poll(() => queuesOf("nr:strict")).toSatisfy(waiterInLine);
      await holder.release();
      await (await waiting).release();
      await dlm.quit();
      await expect.poll(pubsubClients).toEqual(["", "", ""]);
      await new Promise((resolve) => setImmediate(resolve));
      expect(rejections).toEqual([]);
    } finally {
      process.off("unhandledRejection", onRejection);
    }
  });

  it("subscribes on an instance that comes up while a call waits: the first connect is retried (on an unref'd timer)", async () => {
    const late = await startServer();
    const admin = late.client();
    try {
      await late.kill();
      const client = ownClient(0, { socket: { port: late.port, reconnectStrategy: () => 20 } });
      client.connect().catch(() => {});
      const dlm = redlock([clients[0] as NodeRedisClient, clients[1] as NodeRedisClient, client], {
        retryDelay: 60_000,
        retryJitter: 0,
      });
      const holder = await redlock(clients).acquire("nr:late", 10_000);
      const stop = new AbortController();
      const waiting = dlm.acquire("nr:late", 5000, { wait: 60_000, signal: stop.signal }).catch((e: unknown) => e);
      // queued: it subscribed on the two live instances, and the third is being retried
      await expect.poll(() => admins[0]?.zcard("nr:late:redlock-kit:waiters"), { timeout: 10_000 }).toBe(1);
      await late.start();
      await expect
        .poll(async () => ((await admin.pubsub("CHANNELS", "redlock-kit:hand-over:*")) as string[]).length, {
          timeout: 10_000,
        })
        .toBe(1);
      await holder.release();
      const lock = await waiting;
      expect(lock).not.toBeInstanceOf(Error);
      await (lock as Awaited<ReturnType<Redlock["acquire"]>>).release();
      stop.abort();
    } finally {
      await late.stop();
    }
  });
});

describe("node-redis clients that are not connected", () => {
  it("answers LockUnavailableError (503) at once for a client never connected, not a hang", async () => {
    const dlm = redlock([ownClient(0)], { retryCount: 2, retryDelay: 10 });
    const error = await dlm.lock("nr:down", 5000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect((error as LockUnavailableError).status).toBe(503);
  });

  it("answers LockUnavailableError for a client closed after it was given, and no key is left behind", async () => {
    const client = ownClient(0);
    await client.connect();
    const dlm = redlock([client], { retryCount: 0 });
    await warmUp(dlm);
    await (await dlm.acquire("nr:closing", 5000)).release();
    client.destroy();
    await expect(dlm.lock("nr:closing", 5000)).rejects.toBeInstanceOf(LockUnavailableError);
    expect(await admins[0]?.get("nr:closing")).toBeNull();
  });

  it("still locks on a quorum when one of three clients is closed", async () => {
    const closed = ownClient(2);
    const dlm = redlock([clients[0] as NodeRedisClient, clients[1] as NodeRedisClient, closed], { retryCount: 0 });
    const lock = await dlm.acquire("nr:two-of-three", 5000);
    expect(await valuesOf("nr:two-of-three")).toEqual([lock.value, lock.value, null]);
    await lock.release();
  });
});

describe("node-redis objects that are not a client, Cluster or Sentinel", () => {
  /** The error building a Redlock on `given` throws, or the descriptions of the instances it built (then quit). */
  const builtOrError = async (given: unknown) => {
    try {
      const built = new Redlock([given as never]);
      // before: a Redlock whose one instance was an ioredis client of localhost:6379/0
      const described = built.stores.map((store) => store.description);
      await built.quit();
      return described;
    } catch (error) {
      return error;
    }
  };

  it("refuses a Promise (a node-redis connect() not awaited) with a TypeError, instead of taking it for ioredis options (an ioredis client of localhost:6379)", async () => {
    const connecting = ownClient(0).connect();
    const outcome = await builtOrError(connecting);
    expect(outcome).toBeInstanceOf(TypeError);
    expect((outcome as TypeError).message).toContain("instances[0] is a Promise");
    await connecting;
  });

  it("refuses a node-redis v4 legacyMode client (callbacks: its sendCommand returns nothing) with a TypeError when the Redlock is built, instead of failing each call", async () => {
    // the members @redis/client 4.x's createClient({ legacyMode: true }) has that the shape check reads
    const legacyMode = Object.assign(new EventEmitter(), {
      isOpen: true,
      isReady: true,
      options: { legacyMode: true },
      sendCommand: (..._args: unknown[]) => undefined,
      duplicate: () => legacyMode,
      SUBSCRIBE: () => undefined,
      v4: {},
    });
    const outcome = await builtOrError(legacyMode);
    expect(outcome).toBeInstanceOf(TypeError);
    expect((outcome as TypeError).message).toContain("instances[0] is a node-redis v4 client in legacyMode");
    expect(() => new NodeRedisStore(legacyMode as never)).toThrow(TypeError);
  });

  it("refuses a client pool (createClientPool) and a legacy-mode client with a TypeError, instead of taking them for ioredis options (an ioredis client of localhost:6379)", async () => {
    const pool = createClientPool({ socket: { host: "127.0.0.1", port: redis.servers[0]?.port as number } });
    pool.on("error", () => {});
    await pool.connect();
    const legacy = (clients[0] as unknown as { legacy(): object }).legacy();
    try {
      for (const [given, named] of [
        [pool, "a node-redis client pool"],
        [legacy, "a node-redis legacy-mode client"],
      ] as const) {
        const outcome = await builtOrError(given);
        expect(outcome).toBeInstanceOf(TypeError);
        expect((outcome as TypeError).message).toContain(`instances[0] is ${named}`);
      }
    } finally {
      pool.destroy();
    }
  });
});

describe("mixed lists of ioredis and node-redis instances", () => {
  it("locks with an ioredis client, a node-redis client and another ioredis client, and both kinds exclude each other", async () => {
    const [a, c] = [redis.servers[0]?.client() as Redis, redis.servers[2]?.client() as Redis];
    const mixed = redlock([a, clients[1] as NodeRedisClient, c], { retryCount: 0 });
    const allNodeRedis = redlock(clients, { retryCount: 0 });
    await warmUp(mixed);
    const lock = await mixed.acquire("mixed:a", 5000);
    await Promise.all([a.ping(), c.ping()]);
    expect(await valuesOf("mixed:a")).toEqual([lock.value, lock.value, lock.value]);
    await expect(allNodeRedis.acquire("mixed:a", 5000)).rejects.toBeInstanceOf(LockContentionError);
    expect(await lock.release()).toBe(true);
    const other = await allNodeRedis.acquire("mixed:a", 5000);
    await expect(mixed.acquire("mixed:a", 5000)).rejects.toBeInstanceOf(LockContentionError);
    await other.release();
  });

  it("refuses one server given once as an ioredis client and once as a node-redis client", async () => {
    const port = redis.servers[0]?.port as number;
    // the same address: caught before any command
    expect(() => new Redlock([redis.servers[0]?.client() as Redis, clients[0] as NodeRedisClient])).toThrow(
      `instances[1] is the same Redis database as instances[0] (127.0.0.1:${port}/0)`,
    );
    // another name for it: caught by the server's run_id before a vote counts
    const aliased = nodeRedisClient(port, { socket: { host: "localhost", port } });
    extra.push(aliased);
    await aliased.connect();
    const direct = redis.servers[0]?.client() as Redis;
    // each on its own: together they are refused
    await Promise.all([direct, aliased].map((client) => warmUp(new Redlock([client]), { quit: true })));
    const dlm = redlock([direct, aliased, clients[1] as NodeRedisClient], {
      retryCount: 0,
    });
    await expect(dlm.lock("mixed:twice", 5000)).rejects.toThrow(LockConfigurationError);
    await expect(dlm.lock("mixed:twice", 5000)).rejects.toThrow(
      `instances[1] (localhost:${port}/0) is the same Redis server as instances[0] (127.0.0.1:${port}/0)`,
    );
  });
});

describe("a node-redis client whose reconnect strategy gave up", () => {
  it("connected again, to the server another instance reaches, is that server listed twice, not a second vote (it said 'terminated', not 'end')", async () => {
    const [first, second] = redis.servers as [(typeof redis.servers)[0], (typeof redis.servers)[0]];
    const proxy = await startDelayProxy(first.port);
    try {
      // no reconnection: a dropped connection ends the client until connect() is called again
      const moving = ownClient(0, { socket: { host: "127.0.0.1", port: proxy.port, reconnectStrategy: false } });
      const third = ownClient(2);
      await Promise.all([moving.connect(), third.connect()]);
      const dlm = redlock([moving, clients[1] as NodeRedisClient, third], { retryCount: 0 });
      await warmUp(dlm);
      // the address now leads to the second instance's server (a DNS change, a failover)
      proxy.targetPort = second.port;
      proxy.resetAll();
      await expect.poll(() => moving.isOpen).toBe(false);
      await moving.connect();
      // its new connection says who it is before the call (alone: with the others it is refused)
      await warmUp(new Redlock([moving]), { quit: true });
      // without the third instance, only that one server voting twice could make a quorum
      third.destroy();
      const outcome = await dlm.acquire("nr:moved", 5000).catch((error: unknown) => error);
      expect(outcome).toBeInstanceOf(LockConfigurationError);
      expect((outcome as Error).message).toContain("is the same Redis server as instances[0]");
      await Promise.all(clients.map((client) => client.ping()));
      expect(await admins[1]?.get("nr:moved")).toBeNull();
    } finally {
      await proxy.close();
    }
  });
});

describe("a node-redis connection reset after the acquire applied (docs/reliability.md F13)", () => {
  /**
   * Three clients through proxies; an acquisition that every instance applied has its replies held,
   * then every connection is reset, and the next connections hear nothing back until the call has
   * settled: the call's give-backs are sent while the clients reconnect.
   */
  const resetOnceApplied = async (key: string, options: Parameters<typeof nodeRedisClient>[1]) => {
    const proxies = await Promise.all(redis.servers.map((server) => startDelayProxy(server.port)));
    try {
      const proxied = await Promise.all(
        proxies.map((proxy, index) => ownClient(index, { ...options, socket: { port: proxy.port } }).connect()),
      );
      const dlm = redlock(proxied, { retryCount: 0, instanceTimeout: 2000 });
      await (await dlm.acquire(`${key}:warm`, 5000)).release();
      for (const proxy of proxies) proxy.downDelayMs = 60_000;
      const pending = dlm.lock(key, 30_000).catch((error: unknown) => error);
      await expect.poll(async () => (await valuesOf(key)).every((value) => value !== null)).toBe(true);
      for (const proxy of proxies) {
        proxy.downDelayMs = 0;
        proxy.holdNewReplies = true;
        proxy.resetAll();
      }
      const outcome = await pending;
      for (const proxy of proxies) proxy.releaseReplies();
      await expect.poll(() => proxied.every((client) => client.isReady)).toBe(true);
      // anything queued for the new connections has landed once they answered
      await Promise.all(proxied.map((client) => client.ping()));
      return { outcome, values: await valuesOf(key), ttls: await Promise.all(admins.map((admin) => admin.pttl(key))) };
    } finally {
      await Promise.all(proxies.map((proxy) => proxy.close()));
    }
  };

  it("re-sends nothing: the call is unavailable, and its give-backs, queued for the next connections, delete what it applied", async () => {
    const { outcome, values } = await resetOnceApplied("nr:reset", {});
    expect(outcome).toBeInstanceOf(LockUnavailableError);
    expect(values).toEqual([null, null, null]);
  });

  it("with disableOfflineQueue, refuses the give-backs while it reconnects: what the acquire applied stays until its ttl (documented)", async () => {
    const { outcome, values, ttls } = await resetOnceApplied("nr:reset:offline", { disableOfflineQueue: true });
    expect(outcome).toBeInstanceOf(LockUnavailableError);
    // the failed call's value, on every instance, held by nobody
    expect(new Set(values).size).toBe(1);
    expect(values[0]).not.toBeNull();
    expect(ttls.every((ttl) => ttl > 0)).toBe(true);
  });
});

describe("a node-redis client the app subscribes on (RESP2)", () => {
  it("does not vote while subscribed, saying why, and is checked once it unsubscribes: one server listed twice is refused, not counted twice", async () => {
    const port = redis.servers[0]?.port as number;
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    try {
      // another name for the first instance's server, in subscriber mode: in RESP2 (node-redis 5's
      // default, 6 defaults to RESP3) Redis refuses it every other command
      const subscribed = await ownClient(0, { RESP: 2, socket: { host: "localhost", port } }).connect();
      await subscribed.subscribe("app:news", () => {});
      const third = await ownClient(2).connect();
      await warmUp(new Redlock([third]), { quit: true });
      const dlm = redlock([clients[0] as NodeRedisClient, subscribed, third], { retryCount: 0 });
      const lock = await dlm.acquire("nr:subscribed", 5000);
      await lock.release();
      const refused = await redlock([subscribed], { retryCount: 0 })
        .lock("nr:subscribed", 5000)
        .catch((error: unknown) => error);
      expect((refused as LockUnavailableError).causes?.[0]?.error.message).toContain("allowed in this context");
      await subscribed.unsubscribe("app:news");
      // asked again now that it can answer, before the call (alone: with the others it is refused)
      await warmUp(new Redlock([subscribed]), { quit: true });
      // without the third instance, only that one server voting twice could make a quorum
      third.destroy();
      const outcome = await dlm.acquire("nr:subscribed", 5000).catch((error: unknown) => error);
      expect(outcome).toBeInstanceOf(LockConfigurationError);
      expect((outcome as Error).message).toContain(
        `instances[1] (localhost:${port}/0) is the same Redis server as instances[0]`,
      );
      await new Promise((resolve) => setImmediate(resolve));
      // the server did not refuse INFO: its connection was in subscriber mode
      expect(warnings.filter((w) => (w as { code?: string }).code === "REDLOCK_KIT_NO_SERVER_ID")).toEqual([]);
    } finally {
      process.off("warning", onWarning);
    }
  });
});

it("keeps redis an optional peer: no source of core imports it, at run time or for types", () => {
  const src = fileURLToPath(new URL("../src", import.meta.url));
  const files = readdirSync(src, { recursive: true, encoding: "utf8" }).filter((file) => file.endsWith(".ts"));
  expect(files).toContain(join("stores", "node-redis", "node-redis-store.ts"));
  const importsRedis =
    /^\s*(?:import|export)\b[^;]*?from\s*["'](?:redis|@redis\/[^"']+)["']|\b(?:require|import)\(\s*["'](?:redis|@redis\/)/m;
  expect(files.filter((file) => importsRedis.test(readFileSync(join(src, file), "utf8")))).toEqual([]);
});
