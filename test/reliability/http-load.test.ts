/**
 * Load (docs/reliability.md L1, L2): 10,000 requests at concurrency 100 against each adapter, over
 * 1,000 keys and over one hot key, then a shorter soak while nodes are stopped and crashed. A
 * witness Redis outside the quorum counts holders per key inside the handler. A load fails once no
 * request completed for 30 s (helpers/http-load.ts STALL_MS): the work is a fixed amount of CPU
 * (mostly the adapter, Redlock and ioredis in this process), which a loaded machine may take several
 * times as long to do, so the tests' 300 s timeouts are only a safety net above that bound.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { buildApp, type Framework } from "../helpers/http-apps.js";
import { keysLeft, load, lockedRoutes, newTally, unexpectedStatuses } from "../helpers/http-load.js";
import { useInvariants } from "../helpers/invariants.js";
import { countLockEvents } from "../helpers/lock-events.js";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";

const TTL = 1000;
const cluster = useRedisServers(4);
const invariants = useInvariants(cluster, { maxTtlMs: TTL, lockServers: (servers) => servers.slice(0, 3) });
let direct: Redis[] = [];
let witness: Redis;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

beforeAll(() => {
  direct = cluster.servers.slice(0, 3).map((server) => server.client());
  witness = (cluster.servers[3] as RedisServer).client();
});

const node = (i: number) => cluster.servers[i] as RedisServer;

/**
 * Connections open on the lock servers (INFO clients); with `until`, polls up to 10 s for the
 * count to come back down to it first.
 */
async function connectedClients(until?: number): Promise<number> {
  const count = async () => {
    const infos = await Promise.all(direct.map((client) => client.info("clients")));
    return infos.reduce((sum, info) => sum + Number(/connected_clients:(\d+)/.exec(info)?.[1]), 0);
  };
  const deadline = performance.now() + 10_000;
  let now = await count();
  while (until !== undefined && now > until && performance.now() < deadline) {
    await sleep(100);
    now = await count();
  }
  return now;
}

const frameworks: Framework[] = ["express", "koa", "fastify"];

describe.each(frameworks)("%s under load", (framework) => {
  it("10,000 requests at concurrency 100 on 1,000 keys, then on one hot key, then 3,000 that wait on 10 keys: 200/423 only, one holder per key, nothing left or retained", async () => {
    await witness.flushall();
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    const connectionsBefore = await connectedClients();
    const dlm = new Redlock(direct);
    const tally = newTally();
    const count = (status: number) => tally.statuses.get(status) ?? 0;
    // A release runs once its response has finished, after the client read it: every lock taken
    // has been released when the counts meet, and the keys are then read behind those releases
    const events = countLockEvents(() => true);
    const drained = async () => {
      await expect.poll(() => events.released).toBe(events.acquired);
      return keysLeft(direct);
    };
    // Every node is healthy here: a 503 could only mean a loopback server starved of CPU past
    // the per-instance timeout by the load itself (both cores busy), which is not what this tests.
    const app = await buildApp[framework](dlm, lockedRoutes(witness, tally, { ttl: 5000, instanceTimeout: 1500 }));
    let appOpen = true;
    try {
      // one round of each shape first, so that one-time costs (compiled code, pools grown to the
      // concurrency) are in the baseline of the leak check below
      await load(app.url, 1000, 100, (i) => `/items/${i % 1000}`, tally);
      await load(app.url, 1000, 100, () => "/hot", tally);
      await load(app.url, 300, 100, (i) => `/queue/${i % 10}`, tally);
      expect(await drained()).toEqual([]);
      gc();
      const heapWarm = process.memoryUsage().heapUsed;

      let ok = count(200);
      await load(app.url, 10_000, 100, (i) => `/items/${i % 1000}`, tally);
      // on 1,000 keys almost every request gets its lock
      expect(count(200) - ok).toBeGreaterThan(5000);
      const contended = count(423);
      await load(app.url, 10_000, 100, () => "/hot", tally);
      // on one key many are turned away
      expect(count(423) - contended).toBeGreaterThan(0);
      ok = count(200);
      // about ten requests queue on each key at any time: each waits for the ones before it
      await load(app.url, 3_000, 100, (i) => `/queue/${i % 10}`, tally);
      const seen = JSON.stringify([...tally.statuses]);
      // every waiting request had its turn: 3,000 more 200s, not one 423
      expect(count(200) - ok, seen).toBe(3_000);
      expect(unexpectedStatuses(tally, [200, 423]), seen).toEqual([]);
      expect([...tally.statuses.values()].reduce((a, b) => a + b, 0)).toBe(25_300);
      expect(tally.sections).toBe(count(200));
      expect(tally.overlaps).toBe(0);
      expect(await drained()).toEqual([]);
      appOpen = false;
      await app.close();
      // Before quit(), which closes what the Redlock still holds and lets it be collected: a leak
      // that lives as long as the Redlock must show here. The waiters are gone, and with them the
      // hand-over subscriptions' connections (closed a moment after the last waiter; counted by
      // the servers, since the library unrefs those sockets)
      expect(await connectedClients(connectionsBefore)).toBe(connectionsBefore);
      gc();
      const heapAfter = process.memoryUsage().heapUsed;
      // after the warm-up round, 23,000 requests retain less than 2 MiB (about 90 bytes each; 0.9
      // MiB at most was seen here, and as much after 11,500: noise, not per request): a Lock, a
      // closure or a map entry kept per request shows. Fewer requests would hide a small one.
      expect(heapAfter - heapWarm).toBeLessThan(2 * 1024 * 1024);
      // and everything, warm-up included, is back near the baseline from before the Redlock
      expect(heapAfter - heapBefore).toBeLessThan(10 * 1024 * 1024);
    } finally {
      events.stop();
      if (appOpen) await app.close();
      await dlm.quit();
    }
  }, 300_000);
});

describe.each(frameworks)("%s soak under faults", (framework) => {
  it("while nodes are stopped, crashed, restarted after the ttl and a majority lost: 200/423/503 (409 for a lock lost under its handler) only, never two holders", async () => {
    await witness.flushall();
    invariants.faultInjected();
    const dlm = new Redlock(direct, { instanceTimeout: 50 });
    const tally = newTally();
    const app = await buildApp[framework](dlm, lockedRoutes(witness, tally, { ttl: TTL }));
    let faultsDone = false;
    // one cycle of faults while the load runs: it keeps going until the cycle is over
    const faults = (async () => {
      try {
        await sleep(100);
        node(2).pause();
        await sleep(300);
        node(2).resume();
        await node(1).kill();
        // restarted empty only after every key it held has expired (the README's advice)
        await sleep(TTL + 100);
        await node(1).start();
        await sleep(100);
        // a majority gone for a moment: these requests must be told 503, not 423
        node(1).pause();
        node(2).pause();
        await sleep(300);
      } finally {
        node(1).resume();
        node(2).resume();
        await sleep(100);
        faultsDone = true;
      }
    })();
    try {
      await load(
        app.url,
        1_000_000,
        50,
        (i) => (i % 4 === 0 ? "/hot" : `/items/${i % 200}`),
        tally,
        () => faultsDone,
      );
    } finally {
      faultsDone = true;
      await faults;
      await app.close();
      await dlm.quit();
    }
    // 409: a handler whose lock was lost (its validity ended under the faults) before it answered (H6)
    expect(unexpectedStatuses(tally, [200, 409, 423, 503])).toEqual([]);
    expect(tally.statuses.get(200) ?? 0).toBeGreaterThan(0);
    expect(tally.statuses.get(503) ?? 0).toBeGreaterThan(0);
    expect(tally.sections).toBe((tally.statuses.get(200) ?? 0) + (tally.statuses.get(409) ?? 0));
    expect(tally.overlaps).toBe(0);
  }, 300_000);
});
