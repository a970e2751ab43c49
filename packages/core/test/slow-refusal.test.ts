/**
 * A one-key attempt refused by `SET NX GET` asks `PTTL` next, for how long the holder has left: a
 * second round trip inside the same per-instance timeout. When that answer would come past the
 * timeout (a slow instance, a link whose round trip is over half of it), the refusal is answered
 * without it (the caller's ttl standing in for the holder's): it stays contention (423), never
 * unavailability (503), as the acquire script's one-round-trip refusal of a waiting or multi-key call
 * always was.
 */
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { LockContentionError, Redlock } from "../src/index.js";

const cluster = useRedisServers(3);
const proxies: DelayProxy[] = [];
const clients: Redis[] = [];
/** The test's own connections, straight to the servers. */
let admins: Redis[] = [];

beforeAll(() => {
  admins = cluster.servers.map((server) => server.client());
});

afterEach(async () => {
  for (const proxy of proxies) proxy.releaseCommands();
  for (const client of clients.splice(0)) client.disconnect();
  await Promise.all(proxies.splice(0).map((proxy) => proxy.close()));
  await Promise.all(admins.map((admin) => admin.flushall()));
});

const server = (i: number) => cluster.servers[i] as RedisServer;
const admin = (i: number) => admins[i] as Redis;

/** A Redlock on `count` instances, each reached through a proxy, its scripts loaded. */
async function proxied(count: number): Promise<Redlock> {
  const handed: Redis[] = [];
  for (let i = 0; i < count; i++) {
    const proxy = await startDelayProxy(server(i).port);
    proxies.push(proxy);
    const client = server(i).client({ port: proxy.port });
    clients.push(client);
    handed.push(client);
  }
  const dlm = new Redlock(handed, { retryCount: 0, instanceTimeout: 300 });
  await (await dlm.acquire(["warm:a", "warm:b"], 60_000, { instanceTimeout: 5000 })).release();
  await (await dlm.acquire("warm", 60_000, { instanceTimeout: 5000 })).release();
  return dlm;
}

const isPttl = (chunk: Buffer) => /\r\npttl\r\n/i.test(chunk.toString("latin1"));

describe("a one-key refusal whose PTTL would answer past the per-instance timeout", () => {
  it("is contention, with the caller's ttl for Retry-After, when PTTL never answers in time", async () => {
    const dlm = await proxied(1);
    await admin(0).set("held", "another-owner", "PX", 60_000);
    (proxies[0] as DelayProxy).holdCommandsWhen = isPttl;
    const error = await dlm.acquire("held", 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockContentionError);
    expect((error as LockContentionError).retryAfterMs).toBe(1000);
    await dlm.quit();
  });

  it("is contention on a link whose round trip is over half the timeout, for one key as for two", async () => {
    const dlm = await proxied(1);
    await admin(0).set("held", "another-owner", "PX", 60_000);
    // a remote Redis: 200 ms round trip, within the 300 ms timeout; SET then PTTL would take 400 ms
    const proxy = proxies[0] as DelayProxy;
    proxy.upDelayMs = 100;
    proxy.downDelayMs = 100;
    const twoKeys = await dlm.acquire(["held", "free"], 5000).catch((e: unknown) => e);
    const oneKey = await dlm.acquire("held", 5000).catch((e: unknown) => e);
    expect([twoKeys, oneKey].map((error) => (error as Error).name)).toEqual([
      "LockContentionError",
      "LockContentionError",
    ]);
    // the two-key script answered the holder's ttl; the one-key refusal, the caller's
    expect((twoKeys as LockContentionError).retryAfterMs).toBeGreaterThan(50_000);
    expect((oneKey as LockContentionError).retryAfterMs).toBe(5000);
    await dlm.quit();
  });

  it("is contention on 3 instances with one stopped, one refusing and one free", async () => {
    const dlm = await proxied(3);
    await admin(1).set("held", "another-owner", "PX", 60_000);
    for (const proxy of proxies) proxy.holdCommandsWhen = isPttl;
    server(0).pause();
    try {
      const error = await dlm.acquire("held", 1000).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockContentionError);
    } finally {
      server(0).resume();
    }
    // nothing of the call is left: its attempt was given back where it took the key
    await expect.poll(() => admin(2).get("held")).toBeNull();
    await dlm.quit();
  });
});
