import { Redis, type RedisOptions } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { closeNodeRedis, type NodeRedisClient, nodeRedisClient } from "#test-helpers/node-redis.js";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { Redlock } from "../src/index.js";

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
