import { type AddressInfo, createServer } from "node:net";
import { Redis, type RedisOptions } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { recordTimeouts } from "#test-helpers/armed-timers.js";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { closeNodeRedis, type NodeRedisClient, nodeRedisClient } from "#test-helpers/node-redis.js";
import { queueOf } from "#test-helpers/queues.js";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { scriptCalls } from "#test-helpers/workers.js";
import { Redlock } from "../src/index.js";
import { subscriberThrough } from "./helpers/subscriber-through.js";

// One server of its own, which a test restarts; it keeps its keys and queues across a restart.
const harness = useRedisServers(1, { args: ["--appendonly", "yes", "--appendfsync", "always"] });

const unhandled: unknown[] = [];
const record = (reason: unknown) => unhandled.push(reason);
beforeEach(() => {
  unhandled.length = 0;
  process.on("unhandledRejection", record);
});
afterEach(() => {
  process.off("unhandledRejection", record);
});

/** Resolves after the event loop went round: an unhandled rejection is reported by then. */
const loopTurns = async (turns: number) => {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** The connections the library duplicates from `client` (its subscriber connection). */
function keepDuplicates(client: Redis): Redis[] {
  const duplicates: Redis[] = [];
  const duplicate = client.duplicate.bind(client);
  client.duplicate = (override?: Partial<RedisOptions>) => {
    const connection = duplicate(override);
    duplicates.push(connection);
    return connection;
  };
  return duplicates;
}

const handOverChannels = async (admin: Redis) =>
  ((await admin.pubsub("CHANNELS", "redlock-kit:hand-over:*")) as string[]).length;

describe("the hand-over subscriber connection after a reconnect", () => {
  it("leaves no unhandled rejection when it closes while its new connection's ready check is unanswered", async () => {
    const server = harness.servers[0] as RedisServer;
    const admin = server.client();
    const proxy = await startDelayProxy(server.port);
    try {
      // Through the proxy, which will hold back the replies of the reconnected subscriber. No
      // handshake commands: the ready check (INFO) is the first command of a new connection.
      const client = new Redis({
        host: "127.0.0.1",
        port: proxy.port,
        protocol: 2,
        disableClientInfo: true,
        retryStrategy: () => 20,
      });
      client.on("error", () => {});
      const duplicates = keepDuplicates(client);
      const dlm = new Redlock([client]);
      await admin.set("k", "someone else", "PX", 60_000);
      const stop = new AbortController();
      // a waiter that only a hand-over would wake: it keeps the subscription open
      const waiting = dlm
        .acquire("k", 1000, { wait: 60_000, retryDelay: 60_000, retryJitter: 0, signal: stop.signal })
        .catch((error: unknown) => error);
      await expect.poll(() => handOverChannels(admin), { timeout: 10_000 }).toBe(1);
      expect(duplicates).toHaveLength(1);
      const subscriber = duplicates[0] as Redis;

      // The server drops the subscriber's connection; its new one sends INFO and hears nothing.
      proxy.holdNewReplies = true;
      await admin.call("CLIENT", "KILL", "TYPE", "pubsub");
      await expect.poll(() => proxy.heldReplyBytes, { timeout: 10_000 }).toBeGreaterThan(0);
      // Closed now, the connection still reads INFO's answer, and becomes ready as it closes:
      // ioredis's own resubscribe would be rejected there, with nobody handling it.
      await dlm.quit();
      proxy.releaseReplies();
      await expect.poll(() => subscriber.status, { timeout: 10_000 }).toBe("end");
      stop.abort();
      expect(await waiting).toBeInstanceOf(Error);
      await loopTurns(3);
      expect(unhandled).toEqual([]);
      client.disconnect();
    } finally {
      await proxy.close();
    }
  });

  // node-redis's subscriber opens its connection again itself (node-redis's own wait between two
  // attempts would be a timer quit() cannot clear), its first attempts refused while the server
  // restarts; node-redis subscribes again on that connect()
  it.each(["ioredis", "node-redis"] as const)(
    "%s: subscribes again after a restart, and a release then wakes the waiter through it",
    async (library) => {
      const server = harness.servers[0] as RedisServer;
      const admin = server.client();
      const client =
        library === "ioredis"
          ? server.client()
          : await nodeRedisClient(server.port, { socket: { reconnectStrategy: () => 20 } }).connect();
      const dlm = new Redlock([client]);
      const holder = new Redlock([server.client()]);
      try {
        // its first attempt at a 1 s lock waits 100 ms for the new client to say who it is
        await warmUp(dlm);
        const held = await holder.acquire("k2", 60_000);
        const channels = () => handOverChannels(admin);
        // a waiter that only a hand-over wakes (its polls are a minute apart)
        const waiting = dlm.acquire("k2", 1000, {
          wait: 60_000,
          retryDelay: 60_000,
          retryJitter: 0,
          signal: AbortSignal.timeout(15_000),
        });
        await expect.poll(channels, { timeout: 10_000 }).toBe(1);
        await server.restart();
        await expect.poll(channels, { timeout: 10_000 }).toBe(1);
        // the holder's key and the waiter's queue entry came back from the AOF: the release hands
        // the key over and announces it on the channel the subscriber joined again
        await held.release();
        const lock = await waiting;
        expect(lock.valid).toBe(true);
        await lock.release();
      } finally {
        await Promise.all([dlm.quit(), holder.quit()]);
        if (library === "node-redis") closeNodeRedis([client as NodeRedisClient]);
      }
    },
  );
});

/** A poll interval so long that only a hand-over, or a subscription back, can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };
/** A wait of a minute, cut at 15 s: a waiter nothing wakes fails instead of hanging. */
const WAIT = () => ({ ...NO_POLLING, wait: 60_000, signal: AbortSignal.timeout(15_000) });

/** The hand-over channel of the waiter at the head of `key`'s queue, and its lock value. */
async function headOf(admin: Redis, key: string) {
  const [entry] = await admin.zrange(queueOf(key), "0", "0");
  const [channel, , value] = String(entry).split(":");
  return { channel: `redlock-kit:hand-over:${channel}`, value: String(value) };
}

const subscribers = (admin: Redis, channel: string) =>
  admin.pubsub("NUMSUB", channel).then((reply) => Number((reply as unknown[])[1]));

/**
 * Runs `test` with a waiting Redlock whose subscriber connection goes through a proxy of its own,
 * and a holder's Redlock; both quit after it.
 */
async function subscriberBehindProxy(
  library: "ioredis" | "node-redis",
  test: (parts: { admin: Redis; proxy: DelayProxy; dlm: Redlock; holder: Redlock }) => Promise<void>,
): Promise<void> {
  const server = harness.servers[0] as RedisServer;
  const proxy = await startDelayProxy(server.port);
  const { client, close } = await subscriberThrough(library, server, proxy);
  const dlm = new Redlock([client]);
  const holder = new Redlock([server.client()]);
  try {
    await test({ admin: server.client(), proxy, dlm, holder });
  } finally {
    proxy.releaseCommands();
    proxy.releaseReplies();
    await Promise.all([dlm.quit(), holder.quit()]);
    close();
    await proxy.close();
  }
}

describe("a hand-over while the waiter's subscriber connection is down", () => {
  // Before: nothing woke the waiters when the subscription was back; they learned it at their next
  // poll, a minute away here (the end of the wait, with a long retryDelay)
  it.each(["ioredis", "node-redis"] as const)(
    "%s: a release that skipped its waiters (nobody heard their channel) is followed, once subscribed again, by one attempt of each",
    (library) =>
      subscriberBehindProxy(library, async ({ admin, proxy, dlm, holder }) => {
        const held = await holder.acquire("k3", 60_000);
        // two waiters of one Redlock, in line
        const first = dlm.acquire("k3", 10_000, WAIT());
        await expect.poll(() => admin.zcard(queueOf("k3"))).toBe(1);
        const second = dlm.acquire("k3", 10_000, WAIT());
        await expect.poll(() => admin.zcard(queueOf("k3"))).toBe(2);
        const { channel } = await headOf(admin, "k3");
        // the server drops the subscriber connection; the new one's SUBSCRIBE waits in the proxy
        proxy.holdCommandsWhen = (chunk) => /subscribe/i.test(chunk.toString());
        await admin.call("CLIENT", "KILL", "TYPE", "pubsub");
        await expect.poll(() => proxy.heldCommandBytes).toBeGreaterThan(0);
        expect(await subscribers(admin, channel)).toBe(0);
        // the release skips both waiters: the key is free, and they are in line nowhere
        await held.release();
        expect({ key: await admin.exists("k3"), queue: await admin.exists(queueOf("k3")) }).toEqual({
          key: 0,
          queue: 0,
        });
        const before = await scriptCalls(admin);
        proxy.releaseCommands();
        // subscribed again: the older waiter takes the free key, the younger is in line again
        const lock = await first;
        expect(lock.valid).toBe(true);
        await expect.poll(() => admin.zcard(queueOf("k3"))).toBe(1);
        expect((await scriptCalls(admin)) - before).toBe(2);
        // and its release hands the key to the younger one
        await lock.release();
        const next = await second;
        expect(next.valid).toBe(true);
        await next.release();
      }),
  );

  it.each(["ioredis", "node-redis"] as const)(
    "%s: a hand-over whose message was lost with the subscriber's connection is claimed once subscribed again",
    (library) =>
      subscriberBehindProxy(library, async ({ admin, proxy, dlm, holder }) => {
        const held = await holder.acquire("k4", 60_000);
        const waiting = dlm.acquire("k4", 10_000, WAIT());
        await expect.poll(() => admin.zcard(queueOf("k4"))).toBe(1);
        const { value } = await headOf(admin, "k4");
        // the release hands the key over and publishes; the message waits in the proxy, which then
        // drops the connection with it
        proxy.holdReplies();
        await held.release();
        expect(await admin.get("k4")).toBe(value);
        await expect.poll(() => proxy.heldReplyBytes).toBeGreaterThan(0);
        proxy.resetAll();
        // subscribed again, the waiter claims the key the release left it
        const lock = await waiting;
        expect({ valid: lock.valid, value: lock.value }).toEqual({ valid: true, value });
        await lock.release();
      }),
  );
});

describe("the attempt a waiter makes when its subscriber connection subscribed again", () => {
  it("is no retry, and leaves its next poll due when it was", async () => {
    const server = harness.servers[0] as RedisServer;
    const admin = server.client();
    const dlm = new Redlock([server.client()]);
    const holder = new Redlock([server.client()]);
    const sleeps = recordTimeouts((ms) => ms > 30_000);
    try {
      const held = await holder.acquire("k5", 60_000);
      // one retry, a minute away
      const waiting = dlm.acquire("k5", 10_000, { retryCount: 1, ...NO_POLLING });
      await expect.poll(() => admin.zcard(queueOf("k5"))).toBe(1);
      const { channel } = await headOf(admin, "k5");
      const before = await scriptCalls(admin);
      await admin.call("CLIENT", "KILL", "TYPE", "pubsub");
      // subscribed again, it tries once, refused by the holder
      await expect.poll(() => scriptCalls(admin)).toBe(before + 1);
      expect(await subscribers(admin, channel)).toBe(1);
      // its retry is still to come: the holder's release hands it the key
      await held.release();
      const lock = await waiting;
      expect(lock.valid).toBe(true);
      await lock.release();
      // its sleep after that attempt ended when the poll it cut short was due, not a minute later
      expect(sleeps.delays).toHaveLength(2);
      expect(sleeps.delays[0]).toBe(60_000);
      expect(sleeps.delays[1]).toBeLessThan(60_000);
    } finally {
      sleeps.restore();
      await Promise.all([dlm.quit(), holder.quit()]);
    }
  });
});

/** A loopback port nothing listens on (a connection there is refused). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("a SUBSCRIBE refused because its connection failed", () => {
  it("is asked again by the next waiter, and the waiters then queue and are woken by the release", async () => {
    const server = harness.servers[0] as RedisServer;
    const admin = server.client();
    // as a client Redlock creates: queued commands fail after one reconnect attempt
    const client = new Redis({
      host: "127.0.0.1",
      port: server.port,
      maxRetriesPerRequest: 1,
      retryStrategy: () => 20,
    });
    client.on("error", () => {});
    // its first subscriber connection reaches nothing, later ones the server
    const dead = await deadPort();
    const opened: Redis[] = [];
    const refused: unknown[] = [];
    const duplicate = client.duplicate.bind(client);
    client.duplicate = (override?: Partial<RedisOptions>) => {
      const connection = duplicate({ ...override, ...(opened.length === 0 ? { port: dead } : {}) });
      opened.push(connection);
      const subscribe = connection.subscribe.bind(connection) as (channel: string) => Promise<unknown>;
      (connection as { subscribe: unknown }).subscribe = (channel: string) =>
        subscribe(channel).catch((error: unknown) => {
          refused.push(error);
          throw error;
        });
      return connection;
    };
    const dlm = new Redlock([client]);
    const holder = new Redlock([server.client()]);
    try {
      const held = await holder.acquire("k6", 60_000);
      // the first waiter's SUBSCRIBE is refused, and its connection closed: it polls
      const first = dlm.acquire("k6", 10_000, WAIT());
      await expect.poll(() => refused).toHaveLength(1);
      // a second waiter comes while the first waits
      const second = dlm.acquire("k6", 10_000, WAIT());
      // both are in line: the Redlock listens again
      await expect.poll(() => admin.zcard(queueOf("k6"))).toBe(2);
      await held.release();
      await (await first).release();
      await (await second).release();
      expect(opened).toHaveLength(2);
    } finally {
      await Promise.all([dlm.quit(), holder.quit()]);
      client.disconnect();
    }
  });
});
