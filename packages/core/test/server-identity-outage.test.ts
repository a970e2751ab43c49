/**
 * A client that keeps its commands while its server is down (ioredis with `maxRetriesPerRequest:
 * null`, node-redis's offline queue) sends them all once the server is back. Redlock asks a server
 * who it is on each connection (quorum/server-identity.ts): an outage, however many calls and
 * reconnect attempts it sees, must leave at most one such question waiting, not one per attempt.
 */
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { closeNodeRedis, type NodeRedisClient, nodeRedisClient } from "#test-helpers/node-redis.js";
import { until, useRedisServers } from "#test-helpers/redis.js";
import { type Lock, LockUnavailableError, Redlock, type RedlockInstance } from "../src/index.js";

const harness = useRedisServers(1);
const server = () => harness.servers[0] as NonNullable<(typeof harness.servers)[0]>;
// a test that failed during its outage leaves the server up for the next one
afterEach(() => server().restart());

/** Reconnect attempts the outage lasts for, with `CALLS` calls after each (200 in all). */
const ATTEMPTS = 50;
const CALLS = 4;

/** The next time `client` says its connection closed (events.once would reject on its 'error'). */
const next = (client: { once(event: string, listener: () => void): unknown }, event: string) =>
  new Promise<void>((resolve) => client.once(event, resolve));

/** The calls a user makes during the outage: each fails at once, the instance cannot vote. */
async function callsDuringOutage(dlm: Redlock, held: Lock): Promise<void> {
  const calls = [held.extend(10_000)];
  for (let i = 1; i < CALLS; i++) calls.push(dlm.acquire(`outage:${i}`, 1000));
  for (const call of calls) await expect(call).rejects.toBeInstanceOf(LockUnavailableError);
}

/**
 * Holds a lock, stops the server, and makes the outage's calls after each of `ATTEMPTS` reconnect
 * attempts of `client` (its `event` says one ended).
 */
async function outage(dlm: Redlock, client: { once(event: string, listener: () => void): unknown }, event: string) {
  const held = await dlm.acquire("held", 10_000);
  await server().kill();
  for (let i = 0; i < ATTEMPTS; i++) {
    await next(client, event);
    await callsDuringOutage(dlm, held);
  }
}

/** How many INFO the server ran since it started (the harness's start-up probe sends one). */
async function infoCalls(): Promise<number> {
  const admin = server().client({ enableReadyCheck: false });
  try {
    return Number(/cmdstat_info:calls=(\d+)/.exec(await admin.info("commandstats"))?.[1] ?? 0);
  } finally {
    admin.disconnect();
  }
}

/** Locks again once the server is back (its identity read on the new connection). */
async function locksAgain(dlm: Redlock): Promise<void> {
  let lock: Lock | null = null;
  await until("the instance locks again", async () => {
    lock = await dlm.acquire("back", 1000).catch(() => null);
    return lock !== null;
  });
  expect(await (lock as Lock | null)?.release()).toBe(true);
}

describe("a handed client that queues commands while its server is down", () => {
  it("ioredis (maxRetriesPerRequest: null): no INFO per reconnect attempt in its offline queue, one asked once back", async () => {
    const client: Redis = server().client({ maxRetriesPerRequest: null, retryStrategy: () => 20 });
    const dlm = new Redlock([client], { retryCount: 0 });
    try {
      await outage(dlm, client, "close");
      const queue = (client as unknown as { offlineQueue: { toArray(): { command: { name: string } }[] } })
        .offlineQueue;
      // the 'ready' of the next connection asks it: nothing needs to wait in the queue meanwhile
      expect(queue.toArray().filter(({ command }) => command.name === "info").length).toBeLessThanOrEqual(1);

      await server().restart();
      await locksAgain(dlm);
      // at most: the harness's start-up probe, the client's ready check, and Redlock's one question
      expect(await infoCalls()).toBeLessThanOrEqual(3);
    } finally {
      await dlm.quit();
      client.disconnect();
    }
  });

  it("node-redis: no INFO per reconnect attempt waits for the server, one asked once back", async () => {
    const client = await nodeRedisClient(server().port, { socket: { reconnectStrategy: () => 20 } }).connect();
    const dlm = new Redlock([client as unknown as RedlockInstance], { retryCount: 0 });
    try {
      await outage(dlm, client, "reconnecting");
      await server().restart();
      await locksAgain(dlm);
      // at most: the harness's start-up probe and Redlock's one question (node-redis has no ready check)
      expect(await infoCalls()).toBeLessThanOrEqual(2);
    } finally {
      await dlm.quit();
      closeNodeRedis([client as NodeRedisClient]);
    }
  });
});
