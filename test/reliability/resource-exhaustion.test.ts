/**
 * S8, resource exhaustion (docs/reliability.md §3): 100,000 distinct resources leave Redis as they
 * found it once their ttl has passed, with a TTL on every key all along; a 1 MiB key from a key
 * function is refused by the documented cap (packages/core/README.md, "Key templates": 1,024
 * characters) before any command is sent; and a failed lock() is not a retry storm.
 *
 * Commands per failed call are counted with MONITOR (helpers/monitor.ts): INFO commandstats also
 * counts the commands a script runs inside Redis, and cannot tell the Redlock's connections from
 * its hand-over subscriber or from the test's own.
 */
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../helpers/http-apps.js";
import { send } from "../helpers/http-client.js";
import { useInvariants } from "../helpers/invariants.js";
import { sentBy, startMonitors } from "../helpers/monitor.js";
import { pastOnWallClock, sleep, useRedisServers } from "../helpers/redis-servers.js";

const RESOURCES = 100_000;
const TTL = 3000;
const cluster = useRedisServers(3);
const invariants = useInvariants(cluster, { maxTtlMs: TTL });
let direct: Redis[] = [];
let inspectors: Redis[] = [];

beforeAll(async () => {
  direct = cluster.servers.map((server) => server.client());
  inspectors = cluster.servers.map((server) => server.client());
  await Promise.all([...direct, ...inspectors].map((client) => client.ping()));
});

const usedMemory = async (client: Redis) => Number(/used_memory:(\d+)/.exec(await client.info("memory"))?.[1]);
/** db0's key count and how many of them have no TTL (INFO keyspace: keys − expires). */
async function keyspace(client: Redis): Promise<{ keys: number; untimed: number }> {
  const match = /db0:keys=(\d+),expires=(\d+)/.exec(await client.info("keyspace"));
  return match ? { keys: Number(match[1]), untimed: Number(match[1]) - Number(match[2]) } : { keys: 0, untimed: 0 };
}
/** Commands each server ran so far (INFO commandstats), the test's own INFO calls left out. */
async function commandsRun(client: Redis): Promise<number> {
  let calls = 0;
  for (const [, name, count] of (await client.info("commandstats")).matchAll(/cmdstat_([^:]+):calls=(\d+)/g))
    if (name !== "info") calls += Number(count);
  return calls;
}

describe("100,000 distinct resources", () => {
  it("every key has a TTL while they exist, and Redis memory returns to its baseline once they expired", async () => {
    const dlm = invariants.track(new Redlock(direct));
    const baseline = await Promise.all(inspectors.map(usedMemory));
    const seen = { untimed: 0, keys: 0, samples: 0 };
    let locking = true;
    const sampler = (async () => {
      while (locking) {
        for (const { keys, untimed } of await Promise.all(inspectors.map(keyspace))) {
          seen.untimed = Math.max(seen.untimed, untimed);
          seen.keys = Math.max(seen.keys, keys);
        }
        seen.samples++;
        await sleep(100);
      }
    })();
    let next = 0;
    let acquired = 0;
    await Promise.all(
      Array.from({ length: 200 }, async () => {
        while (next < RESOURCES) if (await dlm.lock(`many:${next++}`, TTL)) acquired++;
      }),
    );
    // lock() resolves once a quorum answered: a server behind the others (a loaded machine) may
    // not have run its SETs yet. A PING on each of the Redlock's connections answers after them.
    await Promise.all(direct.map((client) => client.ping()));
    const peak = await Promise.all(inspectors.map(usedMemory));
    locking = false;
    await sampler;
    expect(acquired).toBe(RESOURCES);
    expect(seen.samples).toBeGreaterThan(0);
    expect(seen.untimed).toBe(0);

    // Never released: they go by their TTL alone. Every SET ran by now (the PINGs above); a TTL
    // later on the clock Redis expires keys by, a full SCAN deletes every key it visits that is
    // past its TTL (what it cannot miss: a key there all along), with no wait for Redis's expiry cycle.
    await pastOnWallClock(TTL);
    for (const client of inspectors) {
      let cursor = "0";
      do [cursor] = await client.scan(cursor, "COUNT", 10_000);
      while (cursor !== "0");
    }
    expect(await Promise.all(inspectors.map((client) => client.dbsize()))).toEqual([0, 0, 0]);
    // Redis shrinks its emptied tables and idle client buffers in its cron (10 times a second),
    // which says nothing when it is done: the state that must come, awaited as expect.poll does
    const near = (bytes: number, i: number) => bytes - (baseline[i] ?? 0) < 64 * 1024;
    let after: number[] = [];
    await expect
      .poll(async () => (after = await Promise.all(inspectors.map(usedMemory))))
      .toSatisfy((now: number[]) => now.every(near), "used_memory within 64 KiB of its baseline on every server");
    const kib = (bytes: number) => `${Math.round(bytes / 1024)} KiB`;
    console.info(
      `S8: ${RESOURCES} locks, at most ${seen.keys} keys on a server at once; used_memory baseline ` +
        `${baseline.map(kib).join(", ")}, peak ${peak.map(kib).join(", ")}, after the ttl ${after.map(kib).join(", ")}`,
    );
    // the keys took megabytes; what stays is Redis's own noise (client buffers, allocator rounding)
    for (const [i, bytes] of after.entries()) expect(bytes - (baseline[i] ?? 0)).toBeLessThan(64 * 1024);
    for (const [i, bytes] of peak.entries()) expect(bytes - (baseline[i] ?? 0)).toBeGreaterThan(1024 * 1024);
  }, 120_000);
});

describe("a hostile key", () => {
  it("a 1 MiB key from a key function is refused by the 1,024-character cap: 400, and no command reaches Redis", async () => {
    const dlm = invariants.track(new Redlock(direct));
    const app = invariants.track(
      await buildApp.express(dlm, [
        {
          method: "get",
          path: "/huge",
          key: () => "x".repeat(1 << 20),
          handler: async () => ({ json: { ran: true } }),
        },
      ]),
    );
    const before = await Promise.all(inspectors.map(commandsRun));
    const answer = await send(`${app.url}/huge`);
    expect(answer.status).toBe(400);
    expect(answer.text).not.toContain("ran");
    expect(await dlm.lock("x".repeat(1 << 20), TTL).catch((error: unknown) => error)).toBeInstanceOf(RangeError);
    expect(await Promise.all(inspectors.map(commandsRun))).toEqual(before);
  });
});

describe("a failed lock() is no retry storm", () => {
  it("at most N × (retries + 1) × 2 commands on the Redlock's connections; its hand-over subscriber costs a SUBSCRIBE once", async () => {
    const dlm = invariants.track(new Redlock(direct, { retryDelay: 20, retryJitter: 10 }));
    // once per connection, not per call: the server's identity (INFO) and the scripts
    await (await dlm.acquire("fail:warm-up", TTL)).release();
    await Promise.all(inspectors.map((client) => client.set("fail:r", "foreign", "PX", 60_000)));
    const monitors = await startMonitors(cluster.servers, invariants);
    await Promise.all(monitors.map((monitor) => monitor.caughtUp()));
    /** What each server ran at the top level during `fn`: from the Redlock's own connection, and from any other. */
    const sentDuring = async (fn: () => Promise<unknown>) => {
      const from = monitors.map((monitor) => monitor.seen.length);
      await fn();
      // whatever the call left in flight (leaving the queues) goes out before this PING on the same connection
      await Promise.all(direct.map((client) => client.ping()));
      await Promise.all(monitors.map((monitor) => monitor.caughtUp()));
      return monitors.map((monitor, i) => {
        const own = new Set([`127.0.0.1:${direct[i]?.stream.localPort}`]);
        const topLevel = monitor.seen.slice(from[i]).filter((executed) => executed.source !== "lua");
        return {
          own: sentBy(topLevel, own).filter((name) => name !== "ping"),
          others: topLevel.filter((executed) => !own.has(executed.source)).map((executed) => executed.args[0]),
        };
      });
    };
    const n = direct.length;
    const own = (servers: { own: unknown[] }[]) => servers.flatMap((server) => server.own).length;

    const once = await sentDuring(async () => expect(await dlm.lock("fail:r", TTL, { retryCount: 0 })).toBeNull());
    expect(own(once)).toBeLessThanOrEqual(n * 1 * 2);
    expect(once.flatMap((server) => server.others)).toEqual([]);

    // the first call that may wait subscribes to this Redlock's hand-over channel: a connection
    // of its own per instance (ioredis's HELLO and ready check), then SUBSCRIBE
    const first = await sentDuring(async () => expect(await dlm.lock("fail:r", TTL, { retryCount: 3 })).toBeNull());
    expect(own(first)).toBeLessThanOrEqual(n * 4 * 2);
    for (const server of first)
      expect(server.others.filter((name) => name !== "hello" && name !== "info")).toEqual(["subscribe"]);

    // while it still listens (2 s after its last waiter), the next failed call subscribes nothing
    const again = await sentDuring(async () => expect(await dlm.lock("fail:r", TTL, { retryCount: 3 })).toBeNull());
    expect(own(again)).toBeLessThanOrEqual(n * 4 * 2);
    expect(again.flatMap((server) => server.others)).toEqual([]);
    console.info(
      `S8: commands per failed lock() on ${n} instances: retryCount 0 → ${own(once)}; retryCount 3 → ${own(first)} ` +
        `(+ ${first.flatMap((server) => server.others).length} for the subscriber), then ${own(again)}; bound ${n * 4 * 2}`,
    );
    await Promise.all(inspectors.map((client) => client.del("fail:r")));
  });
});
