/**
 * Late landings and lost replies (docs/reliability.md F4, F5, F12, F13, F14): a command the
 * client gave up on may still be applied. Every one of them must end up deleted, by the
 * release that the library queues behind it on the same connection.
 */
import diagnosticsChannel from "node:diagnostics_channel";
import { type AcquireMessage, LockUnavailableError, RedisStore, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { type DelayProxy, startDelayProxy } from "../helpers/delay-proxy.js";
import { useInvariants } from "../helpers/invariants.js";
import { scriptOf, startMonitors, stepsWith } from "../helpers/monitor.js";
import { type RedisServer, useRedisServers } from "../helpers/redis-servers.js";
import { unanswered } from "../helpers/unanswered.js";

const cluster = useRedisServers(3);
const invariants = useInvariants(cluster, { maxTtlMs: 5000 });
let direct: Redis[] = [];

beforeAll(async () => {
  direct = cluster.servers.map((server) => server.client());
  const dlm = new Redlock(direct);
  await (await dlm.acquire("warm-up", 1000)).release();
});

const server = (i: number) => cluster.servers[i] as RedisServer;
const valuesOf = (key: string) => Promise.all(direct.map((client) => client.get(key)));

/**
 * Resolves once every command the library sends on these connections in answer to a reply already
 * due (a script sent whole again on its NOSCRIPT) has run: Redis answers a connection's commands in
 * order, so a first PING's answer comes after every reply due before it; the library's reaction to
 * those is done by the next turn of the loop, and a second PING then queues behind what it sent.
 */
async function behindAnswers(clients: readonly Redis[]): Promise<void> {
  await Promise.all(clients.map((client) => client.ping()));
  await new Promise(setImmediate);
  await Promise.all(clients.map((client) => client.ping()));
}

/** Clients that reach the servers through proxies; both are closed after the test. */
async function proxied(options: { upDelayMs?: number; downDelayMs?: number } = {}) {
  const proxies: DelayProxy[] = [];
  const clients: Redis[] = [];
  for (const target of cluster.servers) {
    const proxy = invariants.track(await startDelayProxy(target.port, options));
    proxies.push(proxy);
    clients.push(invariants.track(target.client({ port: proxy.port, retryStrategy: () => 10 })));
  }
  await Promise.all(clients.map((client) => client.ping()));
  return { proxies, clients };
}

describe("late landings", () => {
  it("a minority node stopped across the acquire takes our value late, and unlock removes it there too", async () => {
    // the acquire and the release resolve at the quorum of nodes 0 and 1, before any bound: a short
    // one only made them fail when one of those answered late on a loaded machine
    const dlm = new Redlock(direct, { retryCount: 0, instanceTimeout: 1000 });
    server(2).pause();
    // longer than expect.poll's 10 s: below, only the release can clear node 2, not the ttl
    const lock = await dlm.acquire("late:minority", 30_000);
    expect(await Promise.all(direct.slice(0, 2).map((client) => client.get("late:minority")))).toEqual([
      lock.value,
      lock.value,
    ]);
    server(2).resume();
    await direct[2]?.ping();
    // the SET left unanswered was applied on SIGCONT: our value, with a ttl of its own
    expect(await direct[2]?.get("late:minority")).toBe(lock.value);
    const ttl = (await direct[2]?.pttl("late:minority")) ?? 0;
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30_000);

    expect(await lock.release()).toBe(true);
    await expect.poll(() => valuesOf("late:minority")).toEqual([null, null, null]);
    const next = await dlm.acquire("late:minority", 2000);
    await next.release();
  });

  it("a minority node still stopped when the lock is extended and released: on SIGCONT its late SET is deleted by the release queued behind it", async () => {
    const dlm = new Redlock(direct, { retryCount: 0, instanceTimeout: 1000 });
    server(2).pause();
    // longer than expect.poll's 10 s: below, only the release can clear node 2, not the ttl
    const lock = await dlm.acquire("late:released-first", 30_000);
    // the extension and the release resolve at the quorum of nodes 0 and 1; node 2 has answered nothing
    const probe = unanswered(direct[2]?.ping() as Promise<string>);
    await lock.extend(30_000);
    expect(await lock.release()).toBe(true);
    expect(probe.answered).toBe(false);
    expect(await Promise.all(direct.slice(0, 2).map((client) => client.get("late:released-first")))).toEqual([
      null,
      null,
    ]);
    server(2).resume();
    // SET, PEXPIRE and the release run in the order they were sent: nothing of ours stays on node 2
    await direct[2]?.ping();
    expect(await direct[2]?.get("late:released-first")).toBeNull();
    // another client gets it at once, on all three
    const other = new Redlock(direct, { retryCount: 0, instanceTimeout: 1000 });
    const next = await other.acquire("late:released-first", 2000);
    expect(await valuesOf("late:released-first")).toEqual([next.value, next.value, next.value]);
    await next.release();
  });

  it("a majority stopped: unavailable (503, not 423) without waiting on it, and after SIGCONT no node keeps our value", async () => {
    // a bound the running node meets even on a loaded machine; the stopped ones never answer
    const instanceTimeout = 200;
    const options = { retryCount: 1, retryDelay: 20, retryJitter: 10, instanceTimeout };
    const dlm = invariants.track(new Redlock(direct, options));
    const attempts: number[] = [];
    const onAcquire = (message: unknown) => attempts.push((message as AcquireMessage).attempts);
    diagnosticsChannel.subscribe("redlock-kit:acquire", onAcquire);
    server(1).pause();
    server(2).pause();
    // answered only after SIGCONT, below
    const probes = direct.slice(1).map((client) => unanswered(client.ping()));
    const error = await dlm.lock("late:majority", 30_000).catch((e: unknown) => e);
    diagnosticsChannel.unsubscribe("redlock-kit:acquire", onAcquire);
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect((error as LockUnavailableError).status).toBe(503);
    // the per-instance deadline gave up on the stopped nodes
    const causes = (error as LockUnavailableError).causes.map(({ instance, error }) => [instance, error.message]);
    expect(causes.filter(([instance]) => instance !== 0)).toEqual([
      [1, `No answer within ${instanceTimeout} ms`],
      [2, `No answer within ${instanceTimeout} ms`],
    ]);
    expect(attempts).toEqual([2]);
    // both attempts and their releases ended while the stopped nodes had answered nothing: an
    // implementation waiting on them never returns (the test's timeout)
    expect(probes.map((probe) => probe.answered)).toEqual([false, false]);
    expect(await direct[0]?.get("late:majority")).toBeNull();
    server(1).resume();
    server(2).resume();
    // two attempts landed late on each stopped node; each was followed by its release on the same connection
    await Promise.all(direct.map((client) => client.ping()));
    await expect.poll(() => valuesOf("late:majority")).toEqual([null, null, null]);
  });

  it("replies lost one way: what two nodes applied is deleted by the failure path without waiting for the ttl", async () => {
    const { proxies, clients } = await proxied();
    const dlm = new Redlock(clients, { retryCount: 0, instanceTimeout: 100 });
    // every node answers the warm-up, which resolves at a quorum: a long bound costs nothing there,
    // while 100 ms failed it when two answers were late on a loaded machine
    await (await dlm.acquire("warm-up", 2000, { instanceTimeout: 1000 })).release();
    for (const proxy of proxies.slice(1)) proxy.dropReplies = true;
    const monitors = await startMonitors(cluster.servers.slice(1), invariants);

    const error = await dlm.lock("late:oneway", 5000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    // within a poll, far inside the 5 s ttl: deleted, not left to expire
    await expect.poll(() => valuesOf("late:oneway")).toEqual([null, null, null]);
    for (const monitor of monitors) {
      await monitor.caughtUp();
      // the acquire ran on nodes 1 and 2 (only its answer was lost), then the failure path's release
      const calls = monitor.seen.filter(
        // the test's own reads (GET) aside
        (executed) => executed.source !== "lua" && executed.args[0] !== "get" && executed.args.includes("late:oneway"),
      );
      expect(calls.map(scriptOf)).toEqual(["acquire", "release"]);
    }
    // the clients' reply streams are out of step now: close them rather than reuse them
    for (const client of clients) client.disconnect();
  });

  it("a NOSCRIPT answered after the attempt timed out: the acquire script is not sent again behind its give-back", async () => {
    const { proxies, clients } = await proxied();
    const dlm = new Redlock(clients, { retryCount: 0, instanceTimeout: 50 });
    // a multi-key lock runs the acquire script: both scripts are sent whole once, then go by SHA (a
    // long bound for this one, answered by every node: 50 ms failed it on a loaded machine)
    await (await dlm.acquire(["late:warm:a", "late:warm:b"], 2000, { instanceTimeout: 1000 })).release();
    // a failover empties the script cache; another client loads the release script again
    await Promise.all(direct.map((client) => client.script("FLUSH")));
    const other = invariants.track(new Redlock(direct));
    // a one-key lock: SET, then the release script
    await (await other.acquire("late:reload", 1000)).release();
    const evals = async () => {
      let calls = 0;
      for (const client of direct)
        calls += Number(/cmdstat_eval:calls=(\d+)/.exec(await client.info("commandstats"))?.[1] ?? 0);
      return calls;
    };
    const before = await evals();
    // the acquire's NOSCRIPT comes back after the per-instance timeout, after the give-back was sent
    for (const proxy of proxies) proxy.downDelayMs = 200;
    const error = await dlm.lock(["late:noscript:a", "late:noscript:b"], 5000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    // a script sent whole again is sent on its NOSCRIPT's connection, before the PING behind it
    await behindAnswers(clients);
    expect([...(await valuesOf("late:noscript:a")), (await evals()) - before]).toEqual([null, null, null, 0]);
  });

  it("a give-back answered NOSCRIPT after the call's next attempt was sent: not sent again behind that attempt", async () => {
    const proxy = invariants.track(await startDelayProxy(server(0).port));
    const client = invariants.track(server(0).client({ port: proxy.port }));
    const admin = direct[0] as Redis;
    const dlm = new Redlock([client], { retryCount: 1, retryDelay: 0, retryJitter: 0, instanceTimeout: 1000 });
    // the release script is sent whole once on this connection, then goes by SHA
    await (await dlm.acquire("late:giveback:warm", 5000)).release();
    // a failover empties the script cache
    await admin.script("FLUSH");
    const [monitor] = await startMonitors([server(0)], invariants);
    const ran = () => stepsWith(monitor?.seen ?? [], "late:giveback");
    // The lock connection hears nothing back: the first attempt (SET NX) times out, so does its
    // give-back (the release script by SHA, answered NOSCRIPT), and the second attempt, queued now
    // (the subscriber connection opens later and is not held), runs the acquire script, sent whole
    // (its first use on this connection), which finds the key holding the call's own value.
    proxy.holdReplies();
    const pending = dlm.acquire("late:giveback", 5000);
    await expect.poll(ran, { timeout: 10_000 }).toEqual(["acquire", "release", "acquire"]);
    // the three replies come in order: SET applied, NOSCRIPT, acquired (the key held our value)
    proxy.releaseReplies();
    const lock = await pending;
    // the give-back, sent whole again, would land right behind the attempt and delete the key it took
    await behindAnswers([client]);
    await monitor?.caughtUp();
    expect(await admin.get("late:giveback")).toBe(lock.value);
    expect(ran()).toEqual(["acquire", "release", "acquire"]);
    expect(await lock.release()).toBe(true);
  });

  it("an attempt answered NOSCRIPT after the call's next attempt was sent, and given back before: not sent again behind that attempt", async () => {
    const proxy = invariants.track(await startDelayProxy(server(0).port));
    const admin = direct[0] as Redis;
    // a lock user without pub/sub (its waiters poll, the README says): no waiting call cleans up after it
    await admin.acl(
      "SETUSER",
      "late-poller",
      "on",
      ">pw",
      "~*",
      "&*",
      "+@all",
      "-subscribe",
      "-psubscribe",
      "-ssubscribe",
    );
    try {
      const client = invariants.track(server(0).client({ port: proxy.port, username: "late-poller", password: "pw" }));
      const dlm = new Redlock([client], { retryCount: 1, retryDelay: 1500, retryJitter: 0, instanceTimeout: 1000 });
      // a multi-key lock runs the acquire script: both scripts are sent whole once, then go by SHA
      await (await dlm.acquire(["late:poll:warm:a", "late:poll:warm:b"], 5000)).release();
      await admin.script("FLUSH");
      await admin.set("late:poll:a", "rival", "PX", 5000);
      const [monitor] = await startMonitors([server(0)], invariants);
      const ran = () => stepsWith(monitor?.seen ?? [], "late:poll:a");
      // the lock connection hears nothing back: the first attempt (by SHA: NOSCRIPT) times out and is
      // given back (by SHA: NOSCRIPT too)
      proxy.holdReplies();
      const pending = dlm.lock(["late:poll:a", "late:poll:b"], 5000);
      await expect.poll(ran, { timeout: 10_000 }).toEqual(["acquire", "release"]);
      // another process loads the scripts again; the second attempt runs by SHA, refused by the rival
      const other = invariants.track(new Redlock(direct));
      await (await other.acquire(["late:poll:load:a", "late:poll:load:b"], 1000)).release();
      await expect.poll(ran, { timeout: 10_000 }).toEqual(["acquire", "release", "acquire"]);
      await admin.del("late:poll:a");
      // the replies come in order: NOSCRIPT, NOSCRIPT, refused. The first attempt, sent whole again,
      // would take both keys behind the refused one, and no give-back follows a refusal
      proxy.releaseReplies();
      expect(await pending).toBeNull();
      await behindAnswers([client]);
      await monitor?.caughtUp();
      expect(ran()).toEqual(["acquire", "release", "acquire"]);
      expect([await admin.get("late:poll:a"), await admin.get("late:poll:b")]).toEqual([null, null]);
      await dlm.quit();
    } finally {
      await admin.acl("DELUSER", "late-poller");
    }
  });

  it("a reset after the SET applied: ioredis re-sends it, a plain SET NX answers nil, the library's acquire counts it as ours", async () => {
    const { proxies, clients } = await proxied();
    const dlm = new Redlock(clients, { retryCount: 0, instanceTimeout: 2000 });
    await (await dlm.acquire("warm-up", 5000)).release();
    const resetOnceApplied = async (key: string) => {
      // replies are held back until every node has applied the command; then every connection is reset
      await expect.poll(async () => (await valuesOf(key)).every((x) => x !== null)).toBe(true);
      for (const proxy of proxies) {
        proxy.downDelayMs = 0;
        proxy.resetAll();
      }
    };

    // the hazard, pinned: ioredis re-sends the unanswered SET NX, which then finds our own value
    const [first] = proxies as [DelayProxy];
    first.downDelayMs = 60_000;
    const plain = clients[0]?.set("late:reset:plain", "MYVALUE", "PX", 5000, "NX");
    await expect.poll(() => direct[0]?.get("late:reset:plain")).toBe("MYVALUE");
    first.downDelayMs = 0;
    first.resetAll();
    expect(await plain).toBeNull();
    expect(await direct[0]?.get("late:reset:plain")).toBe("MYVALUE");
    await direct[0]?.del("late:reset:plain");

    // the library's acquire script, re-sent the same way on all three nodes, still counts as a yes
    for (const proxy of proxies) proxy.downDelayMs = 60_000;
    const pending = dlm.acquire("late:reset", 5000);
    await resetOnceApplied("late:reset");
    const lock = await pending;
    await expect.poll(() => valuesOf("late:reset")).toEqual([lock.value, lock.value, lock.value]);
    expect(await lock.release()).toBe(true);
    await expect.poll(() => valuesOf("late:reset")).toEqual([null, null, null]);
  });
});

describe("a slow node (150 ms each way through the proxy)", () => {
  it("does not wait on it beyond the per-instance timeout; its late SET is removed by unlock", async () => {
    // its replies take 60 s: an acquire or release that waited on this node would take that long
    const proxy = invariants.track(await startDelayProxy(server(2).port, { upDelayMs: 150, downDelayMs: 150 }));
    const slow = invariants.track(server(2).client({ port: proxy.port }));
    await slow.ping();
    proxy.downDelayMs = 60_000;
    // a bound the fast nodes meet even on a loaded machine
    const instanceTimeout = 500;
    const dlm = new Redlock([direct[0] as Redis, direct[1] as Redis, slow], { retryCount: 0, instanceTimeout });
    const probe = unanswered(slow.ping());
    const lock = await dlm.acquire("slow:one", 5000);
    const unlocked = await lock.release();
    expect(unlocked).toBe(true);
    expect(lock.valid).toBe(false);
    // neither call waited for the slow node's replies (60 s: waiting fails by the test's timeout):
    // the quorum came from the fast nodes
    expect(probe.answered).toBe(false);
    // the SET reached the slow node 150 ms after it was sent, and the release right behind it
    await expect.poll(() => valuesOf("slow:one")).toEqual([null, null, null]);
    // nothing comes back through this proxy for 60 s: rather than wait for QUIT's answer, or for
    // the proxy to end a connection it still owes replies, drop both now
    slow.disconnect();
    await proxy.close();
  });

  it("when the quorum needs a slow node, the validity shrinks by the measured time", async () => {
    const slowClients: Redis[] = [];
    for (const target of [server(1), server(2)]) {
      const proxy = invariants.track(await startDelayProxy(target.port, { upDelayMs: 150, downDelayMs: 150 }));
      slowClients.push(invariants.track(target.client({ port: proxy.port })));
    }
    await Promise.all(slowClients.map((client) => client.ping()));
    const dlm = new Redlock([direct[0] as Redis, ...slowClients], { retryCount: 0, instanceTimeout: 900 });
    await (await dlm.acquire("warm-up", 2000)).release();
    const started = performance.now();
    const lock = await dlm.acquire("slow:two", 2000);
    const elapsed = performance.now() - started;
    // two 150 ms proxy hops; timers may fire a fraction of a millisecond early
    expect(elapsed).toBeGreaterThanOrEqual(295);
    // validity = ttl − elapsed − (⌊ttl × 0.01⌋ + 2)
    expect(lock.remainingMs).toBeLessThanOrEqual(2000 - 295 - 22);
    expect(lock.remainingMs).toBeGreaterThan(0);
    expect(await lock.release()).toBe(true);
    await expect.poll(() => valuesOf("slow:two")).toEqual([null, null, null]);
  });
});

describe("a late answer to a one-key acquire", () => {
  it.each([
    ["whose syntax is not yet known to work", false],
    ["whose SET NX GET already worked", true],
  ])(
    "a one-key acquire on a store %s, re-sent after a release of its value was sent: nothing is set again",
    async (_, warm) => {
      const { proxies, clients } = await proxied();
      const [first] = proxies as [DelayProxy];
      const store = new RedisStore(clients[0] as Redis);
      if (warm) {
        expect(await store.acquire(["late:again"], "warm", 5000)).toEqual({ acquired: true });
        expect(await store.release(["late:again"], "warm")).toBe(1);
      }
      // node 0 applies the SET but its answer is held, as when Redlock had its quorum from the others
      first.downDelayMs = 60_000;
      const acquiring = store.acquire(["late:again"], "ours", 5000);
      await expect.poll(() => direct[0]?.get("late:again")).toBe("ours");
      // the holder releases, then the connection resets: ioredis re-sends what was unanswered, and the
      // SET finds our own value. A second command sent on that answer must not set the key again.
      const releasing = store.release(["late:again"], "ours");
      first.downDelayMs = 0;
      first.resetAll();
      await Promise.all([acquiring, releasing]);
      expect(await direct[0]?.get("late:again")).toBeNull();
    },
  );
});
