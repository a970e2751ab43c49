import type { EventEmitter } from "node:events";
import type { Cluster, Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closeNodeRedis, connectedNodeRedis, type NodeRedisClient } from "#test-helpers/node-redis.js";
import { queueOf } from "#test-helpers/queues.js";
import { startCluster, until, useRedisServers } from "#test-helpers/redis.js";
import { type Lock, LockUnavailableError, Redlock, type RedlockInstance } from "../src/index.js";

/**
 * A Redlock built over the app's own long-lived client (one per job, tenant or test, or the CLI's
 * `watch` after a role change) must leave that client as it found it once it quit: no listener of
 * its own left behind, or each closed Redlock stays reachable from the client, answers its events,
 * and past ten of them Node warns MaxListenersExceededWarning.
 */

const servers = useRedisServers(1);
/** The test's node-redis clients: one of its own for each test, and one to read the queue with. */
const nodeRedis: NodeRedisClient[] = [];
const newNodeRedis = async () => {
  const [client] = await connectedNodeRedis([servers.servers[0]?.port as number]);
  nodeRedis.push(client as NodeRedisClient);
  return client as NodeRedisClient;
};
let reader: NodeRedisClient;

beforeAll(async () => {
  reader = await newNodeRedis();
});

afterAll(() => closeNodeRedis(nodeRedis));

/** The warnings the process emitted during a test. */
const warnings: string[] = [];
const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
beforeAll(() => {
  process.on("warning", onWarning);
});
afterAll(() => {
  process.off("warning", onWarning);
});
afterEach(() => {
  warnings.length = 0;
});

/** Every event the client has listeners for, with their number. */
function listenerCounts(client: EventEmitter): Record<string, number> {
  return Object.fromEntries(client.eventNames().map((name) => [String(name), client.listenerCount(name)]));
}

/**
 * Builds a Redlock on `client` and uses what it sets up: a lock and its release, and a call that
 * waits for a held key (the hand-over subscriber where the client has one), then quits it.
 */
async function useAndQuit(client: RedlockInstance, queueSize: () => Promise<number>): Promise<void> {
  const dlm = new Redlock([client], { retryDelay: 50, retryJitter: 0 });
  const holder = new Redlock([client]);
  try {
    const lock = await dlm.acquire("job", 10_000);
    expect(await lock.release()).toBe(true);
    const held = await holder.acquire("job", 10_000);
    const waiting = dlm.acquire("job", 10_000, { wait: 10_000, signal: AbortSignal.timeout(10_000) });
    await until("the waiter is queued or polling", async () => (await queueSize()) === 1);
    await held.release();
    expect(await (await waiting).release()).toBe(true);
  } finally {
    await Promise.all([dlm.quit(), holder.quit()]);
  }
}

/** A new client of each library, and how long the waiters' queue is (the waiter is waiting at 1). */
const handed = (): [string, () => Promise<EventEmitter & RedlockInstance>, () => Promise<number>][] => [
  ["an ioredis client", async () => servers.servers[0]?.client() as Redis, queueLength],
  ["a node-redis client", async () => (await newNodeRedis()) as unknown as EventEmitter & RedlockInstance, queueLength],
];

const queueLength = () => reader.zCard(queueOf("job"));

describe("quit() leaves no listener on the clients a Redlock was handed", () => {
  it.each(handed())("%s: its listeners are back to what they were", async (_, clientOf, queueSize) => {
    const client = await clientOf();
    const before = listenerCounts(client);
    await useAndQuit(client, queueSize);
    expect(listenerCounts(client)).toEqual(before);
    // and the client was left open, working
    await useAndQuit(client, queueSize);
    expect(listenerCounts(client)).toEqual(before);
  });

  it.each(handed())("%s: 20 Redlocks in turn, no MaxListenersExceededWarning", async (_, clientOf, queueSize) => {
    const client = await clientOf();
    const before = listenerCounts(client);
    for (let i = 0; i < 20; i++) await useAndQuit(client, queueSize);
    expect(listenerCounts(client)).toEqual(before);
    expect(warnings.filter((warning) => warning.startsWith("MaxListenersExceededWarning"))).toEqual([]);
  });
});

describe("quit() leaves no listener on a handed ioredis Cluster", () => {
  it("its listeners are back to what they were, after 20 Redlocks in turn", { timeout: 60_000 }, async () => {
    const cluster = await startCluster(3);
    try {
      const client: Cluster = cluster.client();
      await client.ping();
      const before = listenerCounts(client);
      for (let i = 0; i < 20; i++) {
        // a Cluster waiter polls (no hand-over there, no queue to wait for)
        await useAndQuit(client, async () => 1);
      }
      expect(listenerCounts(client)).toEqual(before);
      expect(warnings.filter((warning) => warning.startsWith("MaxListenersExceededWarning"))).toEqual([]);
    } finally {
      await cluster.stop();
    }
  });
});

describe("a handed ioredis Cluster that is down", () => {
  it("gets no listener per reconnect from the calls made meanwhile", { timeout: 60_000 }, async () => {
    const cluster = await startCluster(3);
    try {
      // a short retry delay: the Cluster closes and reconnects many times within the test
      const client: Cluster = cluster.client({ clusterRetryStrategy: () => 20 });
      const dlm = new Redlock([client], { retryCount: 0 });
      try {
        // the Cluster has said who it is (CLUSTER NODES): no read is waiting
        await (await dlm.acquire("job", 10_000)).release();
        const before = listenerCounts(client);
        await Promise.all(cluster.servers.map((server) => server.kill()));
        // each call after the connection closed (again) waits for the Cluster's next 'ready' to ask it
        for (let i = 0; i < 15; i++) {
          // not events.once(), which rejects at the Cluster's "error"
          await new Promise((resolve) => client.once("close", resolve));
          await expect(dlm.acquire("job", 1000)).rejects.toBeInstanceOf(LockUnavailableError);
        }
        expect(client.listenerCount("ready")).toBeLessThanOrEqual((before.ready ?? 0) + 1);
        expect(warnings.filter((warning) => warning.startsWith("MaxListenersExceededWarning"))).toEqual([]);
        // back up: the Cluster is asked once ready, votes again, and the wait's listener is gone
        await Promise.all(cluster.servers.map((server) => server.restart()));
        let lock: Lock | null = null;
        await until("the Cluster locks again", async () => {
          lock = await dlm.lock("job", 1000).catch(() => null);
          return lock !== null;
        });
        expect(await (lock as Lock | null)?.release()).toBe(true);
        expect(listenerCounts(client)).toEqual(before);
      } finally {
        await dlm.quit();
      }
    } finally {
      await cluster.stop();
    }
  });
});

describe("a lock held past quit() on handed clients", () => {
  it("extends on no instance (its connections are no longer watched), and still releases", async () => {
    const client = servers.servers[0]?.client() as Redis;
    const dlm = new Redlock([client], { retryCount: 0 });
    const lock = await dlm.acquire("held", 10_000);
    await dlm.quit();
    const extended = lock.extend(10_000);
    await expect(extended).rejects.toBeInstanceOf(LockUnavailableError);
    await expect(extended).rejects.toMatchObject({
      causes: [{ error: { message: expect.stringMatching(/quit\(\)/) } }],
    });
    expect(await lock.release()).toBe(true);
    expect(await client.exists("held")).toBe(0);
  });
});
