import { getEventListeners } from "node:events";
import type { Redis } from "ioredis";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { recordTimeouts } from "#test-helpers/armed-timers.js";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { arrival, attemptsOf, nextExtensions } from "#test-helpers/lock-events.js";
import { type Monitor, scriptOf, startMonitor } from "#test-helpers/monitor.js";
import { type RedisServer, sleep, useRedisServers } from "#test-helpers/redis-servers.js";
import { turnClock } from "#test-helpers/turn-clock.js";
import { unanswered } from "#test-helpers/unanswered.js";
import { warmUp } from "#test-helpers/warm-up.js";
import {
  Lock,
  LockContentionError,
  LockLostError,
  LockUnavailableError,
  MemoryStore,
  RedisStore,
  Redlock,
} from "../src/index.js";

const cluster = useRedisServers(5);
let clients: Redis[] = [];

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
});

afterEach(async () => {
  for (const server of cluster.servers) if (!server.running) await server.start();
  for (const server of cluster.servers) {
    try {
      server.resume();
    } catch {}
  }
  await Promise.all(clients.map((client) => client.flushall()));
});

/**
 * The per-instance bound of this file's locks of 1 s or more where a test is not about that bound:
 * the default (a tenth of the ttl, 100 ms at 1 s) is missed by a loaded machine's Redis, and the call
 * then fails unavailable, not on what the test is about. Half the shortest such ttl; validity (ttl −
 * elapsed − drift) and renewal margins are unchanged. Shorter locks (300 ms) give half their ttl.
 */
const BOUND = 500;

const first = (n: number): Redis[] => clients.slice(0, n);
const values = (key: string, n = 5) => Promise.all(first(n).map((client) => client.get(key)));

describe("Redlock with three instances", () => {
  it("locks, runs the critical section while valid, and unlocks as in the seed example", async () => {
    const dlm = new Redlock(first(3));
    // new clients: one that has not said who it is within the call's 100 ms does not vote, and the
    // lock is taken on the other two alone
    await warmUp(dlm);
    const lock = await dlm.lock("resource_name", 1000, { instanceTimeout: BOUND });
    expect(lock).toBeInstanceOf(Lock);
    if (!lock) return;
    expect(lock.valid).toBe(true);
    expect(lock.resources).toEqual(["resource_name"]);
    expect(lock.remainingMs).toBeGreaterThan(0);
    expect(lock.remainingMs).toBeLessThanOrEqual(1000 - 12);
    expect(lock.expiresAt).toBeGreaterThan(Date.now());
    expect(lock.value).toMatch(/^[0-9a-f]{32}$/);
    await expect.poll(() => values("resource_name", 3)).toEqual([lock.value, lock.value, lock.value]);
    for (const client of first(3)) {
      const ttl = await client.pttl("resource_name");
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(1000);
    }
    expect(await dlm.unlock(lock)).toBe(true);
    expect(lock.valid).toBe(false);
    await expect.poll(() => values("resource_name", 3)).toEqual([null, null, null]);
  });

  it("returns null on contention from lock() and throws LockContentionError with the holder's ttl from acquire()", async () => {
    const dlm = new Redlock(first(3), { retryCount: 1, retryDelay: 10, retryJitter: 5, instanceTimeout: BOUND });
    const held = await dlm.acquire("busy", 5000);
    expect(await dlm.lock("busy", 1000)).toBeNull();
    const error = await dlm.acquire("busy", 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockContentionError);
    const contention = error as LockContentionError;
    expect(contention.status).toBe(423);
    expect(contention.statusCode).toBe(423);
    expect(contention.code).toBe("ERR_REDLOCK_CONTENTION");
    expect(contention.resources).toEqual(["busy"]);
    expect(contention.retryAfterMs).toBeGreaterThan(3000);
    expect(contention.retryAfterMs).toBeLessThanOrEqual(5000);
    expect(contention.headers["Retry-After"]).toMatch(/^[1-5]$/);
    await held.release();
  });

  it("never lets a stale holder delete the next owner's lock", async () => {
    const dlm = new Redlock(first(3), { retryCount: 0 });
    // 300 ms, 150 ms per instance: a 100 ms lock (50 ms per instance) is never taken from a Redis
    // answering in over 100 ms
    const stale = await dlm.acquire("handoff", 300, { instanceTimeout: 150 });
    // expired everywhere (its validity ends before its keys do)
    await expect.poll(() => values("handoff", 3)).toEqual([null, null, null]);
    expect(stale.valid).toBe(false);
    const next = await dlm.acquire("handoff", 5000);
    expect(await dlm.unlock(stale)).toBe(false);
    await expect.poll(() => values("handoff", 3)).toEqual([next.value, next.value, next.value]);
    expect(next.valid).toBe(true);
    await next.release();
  });

  it("extends to ttl ms from now, and refuses to extend after expiry with LockLostError", async () => {
    const dlm = new Redlock(first(3));
    // 150 ms per instance (half the ttl), not the default 30 ms a loaded machine's Redis misses; the
    // extensions keep it
    const lock = await dlm.acquire("ext", 300, { instanceTimeout: 150 });
    const extended = await dlm.extend(lock, 2000);
    expect(extended).toBe(lock);
    expect(lock.remainingMs).toBeGreaterThan(1000);
    for (const client of first(3)) expect(await client.pttl("ext")).toBeGreaterThan(1500);
    await lock.release();

    // 300 ms, not 100 ms: a 100 ms lock is never taken from a Redis answering in over 100 ms
    const short = await dlm.acquire("ext2", 300, { instanceTimeout: 150 });
    const signal = short.signal;
    // its validity ended: the signal says so
    await aborted(signal);
    await expect(dlm.extend(short, 1000)).rejects.toBeInstanceOf(LockLostError);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(LockLostError);
    await expect.poll(() => values("ext2", 3)).toEqual([null, null, null]);
  });

  it.each([
    ["its signal unread", false],
    ["its signal aborted meanwhile", true],
  ])(
    "rejects an extension a quorum confirms only after the lock's validity ended (%s): the lock stays lost",
    async (_, readSignal) => {
      // the replies of every instance held in proxies while the injected clock passes the validity
      const proxies = await Promise.all(first(3).map((_, i) => startDelayProxy(cluster.servers[i]?.port as number)));
      const through = proxies.map((proxy, i) => (cluster.servers[i] as RedisServer).client({ port: proxy.port }));
      let now = 1_000_000;
      try {
        // a per-instance bound no held reply reaches: every instance answers, each one yes
        const dlm = new Redlock(through, { clock: () => now, instanceTimeout: 5000 });
        const lock = await dlm.acquire("lapsed", 10_000);
        now += 5000;
        for (const proxy of proxies) proxy.holdReplies();
        const extension = dlm.extend(lock, 10_000).then(
          () => "extended",
          (error: unknown) => error,
        );
        await expect.poll(() => proxies.every((proxy) => proxy.heldReplyBytes > 0)).toBe(true);
        // past the validity the acquisition gave, within the one the extension would give
        now += 5000;
        expect(lock.valid).toBe(false);
        const signal = readSignal ? lock.signal : undefined;
        if (signal) await aborted(signal);
        for (const proxy of proxies) proxy.releaseReplies();
        const outcome = await extension;
        // before: 'extended', the lock valid again (or, its signal aborted, resolved for a lost lock)
        expect(outcome).toBeInstanceOf(LockLostError);
        if (signal) expect(outcome).toBe(signal.reason);
        expect(lock.valid).toBe(false);
        expect(lock.remainingMs).toBe(0);
        expect(lock.signal.aborted).toBe(true);
        // the keys it extended are still its own: its release deletes them
        expect(await lock.release()).toBe(true);
        expect(await values("lapsed", 3)).toEqual([null, null, null]);
      } finally {
        for (const client of through) client.disconnect();
        await Promise.all(proxies.map((proxy) => proxy.close()));
      }
    },
  );

  describe("a release sent while an extension is in flight (the extension's replies held in proxies)", () => {
    let proxies: DelayProxy[] = [];
    let through: Redis[] = [];

    beforeEach(async () => {
      proxies = await Promise.all(first(3).map((_, i) => startDelayProxy(cluster.servers[i]?.port as number)));
      through = proxies.map((proxy, i) => (cluster.servers[i] as RedisServer).client({ port: proxy.port }));
    });

    afterEach(async () => {
      for (const client of through) client.disconnect();
      await Promise.all(proxies.map((proxy) => proxy.close()));
    });

    /** Holds every reply from now on; the function it gives waits until each instance has answered (ran) a command since. */
    const holdUntilSent = async () => {
      for (const proxy of proxies) proxy.holdReplies();
      return () => expect.poll(() => proxies.every((proxy) => proxy.heldReplyBytes > 0)).toBe(true);
    };

    it("extend(): the release wins, the extension rejects with LockLostError, its signal stays quiet", async () => {
      // a per-instance bound no held reply reaches: every instance answers, each one yes
      const dlm = new Redlock(through, { instanceTimeout: 5000 });
      const lock = await dlm.acquire("released-during", 10_000);
      const signal = lock.signal;
      const sent = await holdUntilSent();
      const extension = dlm.extend(lock, 10_000).then(
        () => "extended",
        (error: unknown) => error,
      );
      await sent();
      // behind the extension on each connection: its DEL runs after the PEXPIRE
      const released = lock.release();
      await expect.poll(() => values("released-during", 3)).toEqual([null, null, null]);
      for (const proxy of proxies) proxy.releaseReplies();
      expect(await released).toBe(true);
      const outcome = await extension;
      // before: 'extended', for a lock already released
      expect(outcome).toBeInstanceOf(LockLostError);
      expect((outcome as Error).message).toMatch(/released during the extension/);
      expect(lock.valid).toBe(false);
      // the holder let go: nothing was lost, so nothing tells its listeners it was
      expect(signal.aborted).toBe(false);
      expect(await values("released-during", 3)).toEqual([null, null, null]);
    });

    it("using(): fn returns while its renewal is in flight; using() resolves to fn's result and the signal stays quiet", async () => {
      const dlm = new Redlock(through, { instanceTimeout: 1000 });
      let seen: AbortSignal | undefined;
      const renewed = nextExtensions("renewed-during", 1);
      const using = dlm.using("renewed-during", 2000, async (signal) => {
        seen = signal;
        // the renewal comes at half the ttl: its replies, and the release's behind them, held
        const sent = await holdUntilSent();
        await sent();
        return "done";
      });
      await expect.poll(() => values("renewed-during", 3)).toEqual([null, null, null]);
      for (const proxy of proxies) proxy.releaseReplies();
      expect(await using).toBe("done");
      // the renewal's outcome came: a loss the holder did not ask for would have aborted the signal by now
      await arrival(renewed, "the renewal's outcome");
      expect(seen?.aborted).toBe(false);
    });
  });

  it("refuses an extension to a ttl the drift uses up with RangeError, as acquire does, writing nothing", async () => {
    const dlm = new Redlock(first(3));
    const lock = await dlm.acquire("tiny", 5000);
    for (const ttl of [2, 4]) {
      const error = await dlm.extend(lock, ttl).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RangeError);
      expect((error as Error).message).toMatch(new RegExp(`^ttl of ${ttl} ms can never give a valid lock`));
    }
    expect(lock.valid).toBe(true);
    expect(lock.signal.aborted).toBe(false);
    // the keys kept their expiry: no PEXPIRE of 2 or 4 ms reached them
    for (const client of first(3)) expect(await client.pttl("tiny")).toBeGreaterThan(4);
    expect(await lock.release()).toBe(true);
  });

  it("answers an extension no quorum could confirm with LockUnavailableError and keeps the lock valid", async () => {
    const servers = cluster.servers.slice(0, 3) as RedisServer[];
    // the paused instances never answer, whatever the bound: BOUND, not 100 ms, lets the live one
    // answer the acquisition on a loaded machine
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    const lock = await dlm.acquire("unconfirmed", 5000);
    servers[1]?.pause();
    servers[2]?.pause();
    const error = await dlm.extend(lock, 5000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect(lock.valid).toBe(true);
    expect(lock.signal.aborted).toBe(false);
    servers[1]?.resume();
    servers[2]?.resume();
    expect(await dlm.extend(lock, 5000)).toBe(lock);
    expect(await lock.release()).toBe(true);
  });

  it("ends the validity at the shorter ttl of an extension no quorum confirmed, before another owner can lock", async () => {
    const servers = cluster.servers.slice(0, 3) as RedisServer[];
    // the paused instances never answer, whatever the bound: BOUND, not 100 ms, lets the live ones
    // answer the acquisition on a loaded machine
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    const other = new Redlock(first(3), { retryCount: 0 });
    const lock = await dlm.acquire("shortened", 10_000);
    const signal = lock.signal;
    servers[1]?.pause();
    servers[2]?.pause();
    // the PEXPIRE may land on the paused instances once they resume: the keys expire after 1 s there
    const error = await dlm.extend(lock, 1000).catch((e: unknown) => e);
    servers[1]?.resume();
    servers[2]?.resume();
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect(lock.remainingMs).toBeLessThanOrEqual(1000);
    let next: Lock | null = null;
    while (next === null) {
      next = await other.lock("shortened", 5000);
      // whenever another owner holds the key, this lock no longer claims to
      if (next !== null) expect(lock.valid).toBe(false);
      else await sleep(20);
    }
    // the signal follows at the shortened validity's end
    await expect.poll(() => signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(LockLostError);
    await next.release();
  });

  it("counts an extension's validity with the driftFactor the lock was acquired with", async () => {
    const dlm = new Redlock(first(3));
    const lock = await dlm.acquire("drift", 1000, { driftFactor: 0.3, instanceTimeout: BOUND });
    const drift = Math.floor(1000 * 0.3) + 2;
    expect(lock.remainingMs).toBeLessThanOrEqual(1000 - drift);
    await dlm.extend(lock, 1000);
    expect(lock.remainingMs).toBeLessThanOrEqual(1000 - drift);
    await lock.release();
  });

  it("fails an extension with LockLostError when another owner took the keys", async () => {
    const dlm = new Redlock(first(3));
    const lock = await dlm.acquire("taken", 5000);
    await Promise.all(first(3).map((client) => client.set("taken", "someone-else")));
    const error = await dlm.extend(lock, 5000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockLostError);
    expect((error as LockLostError).status).toBe(409);
    expect(lock.valid).toBe(false);
    expect(await values("taken", 3)).toEqual(["someone-else", "someone-else", "someone-else"]);
  });

  it("fails an extension with LockLostError when another owner holds a majority, and its release still deletes the key left on the minority (T7)", async () => {
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    const lock = await dlm.acquire("majority-taken", 5000);
    const signal = lock.signal;
    // our key expired on two instances and another owner took them: the third still holds ours
    await Promise.all(first(2).map((client) => client.set("majority-taken", "someone-else", "PX", 5000)));
    const error = await dlm.extend(lock, 5000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockLostError);
    expect((error as Error).message).toMatch(/could not be extended on a quorum \(1 of 3/);
    expect(lock.valid).toBe(false);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(error);
    // nothing of the other owner's touched; our minority key is still there until released
    expect(await values("majority-taken", 3)).toEqual(["someone-else", "someone-else", lock.value]);
    // a quorum no longer held it: false, but the release reaches every instance and deletes ours
    expect(await lock.release()).toBe(false);
    await expect.poll(() => values("majority-taken", 3)).toEqual(["someone-else", "someone-else", null]);
  });

  it("using(): a renewal that finds another owner on a majority aborts the signal, and the release in finally deletes the minority key (T7)", async () => {
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    let value = "";
    let reason: unknown;
    // 2 s, renewed at half of it: the renewal, not the validity timer, reports the loss
    await dlm.using("majority-renewal", 2000, async (signal, lock) => {
      value = lock.value;
      await Promise.all(first(2).map((client) => client.set("majority-renewal", "thief", "PX", 5000)));
      await aborted(signal);
      reason = signal.reason;
    });
    expect(reason).toBeInstanceOf(LockLostError);
    expect((reason as Error).message).toMatch(/could not be extended on a quorum \(1 of 3/);
    expect(value).not.toBe("");
    await expect.poll(() => values("majority-renewal", 3)).toEqual(["thief", "thief", null]);
  });

  it("refuses a lock of another Redlock in unlock() and extend(): its keys stay held, and both Redlocks keep their live locks", async () => {
    const a = new Redlock(first(3));
    const b = new Redlock(clients.slice(3, 5));
    const other = await a.acquire("other", 5000);
    const theirs = await b.acquire("theirs", 5000);
    const lock = await a.acquire("mine", 5000);
    await expect(b.unlock(lock)).rejects.toThrow("lock must be a Lock returned by this Redlock");
    await expect(b.extend(lock, 5000)).rejects.toThrow("lock must be a Lock returned by this Redlock");
    expect(lock.valid).toBe(true);
    expect(await values("mine", 3)).toEqual([lock.value, lock.value, lock.value]);
    expect((await a.inspect("other")).ours).toBe(true);
    expect((await b.inspect("theirs")).ours).toBe(true);
    expect(await lock.release()).toBe(true);
    expect(await values("mine", 3)).toEqual([null, null, null]);
    expect(await other.release()).toBe(true);
    expect(await theirs.release()).toBe(true);
  });

  it("locks several resources all or nothing", async () => {
    const dlm = new Redlock(first(3), { retryCount: 0 });
    const ab = await dlm.acquire(["a", "b", "a"], 5000);
    expect(ab.resources).toEqual(["a", "b"]);
    expect(await dlm.lock(["b", "c"], 5000)).toBeNull();
    // c must not be left locked by the failed [b, c] attempt
    expect(await values("c", 3)).toEqual([null, null, null]);
    const c = await dlm.acquire("c", 5000);
    await ab.release();
    await c.release();
    await expect.poll(() => values("a", 3)).toEqual([null, null, null]);
  });

  it("keeps the resources it locked when the caller changes the array afterwards", async () => {
    const dlm = new Redlock(first(3));
    for (const names of [["solo"], ["x", "y"]]) {
      const lock = await dlm.acquire(names, 5000);
      names[0] = "changed";
      expect(lock.resources[0]).not.toBe("changed");
      expect(await lock.release()).toBe(true);
    }
    await expect
      .poll(() => Promise.all(["solo", "x", "y"].map((key) => values(key, 3))))
      .toEqual([
        [null, null, null],
        [null, null, null],
        [null, null, null],
      ]);
  });

  it("recovers from SCRIPT FLUSH between acquire, extend and release", async () => {
    const dlm = new Redlock(first(3));
    const lock = await dlm.acquire("flush", 2000);
    await Promise.all(first(3).map((client) => client.script("FLUSH")));
    await dlm.extend(lock, 2000);
    await Promise.all(first(3).map((client) => client.script("FLUSH")));
    expect(await dlm.unlock(lock)).toBe(true);
    await expect.poll(() => values("flush", 3)).toEqual([null, null, null]);
  });

  it("gives exactly one of 100 concurrent contenders the lock", async () => {
    const dlm = new Redlock(first(3), { retryCount: 0 });
    const results = await Promise.all(Array.from({ length: 100 }, () => dlm.lock("hot", 5000)));
    const winners = results.filter((lock): lock is Lock => lock !== null);
    expect(winners).toHaveLength(1);
    const winner = winners[0] as Lock;
    await expect.poll(() => values("hot", 3)).toEqual([winner.value, winner.value, winner.value]);
    await winner.release();
  });

  it("gives 100 concurrent contenders of two Redlocks distinct values, and no loser's partial key is left once they return (M7)", async () => {
    // instance 2 held by another owner; A reaches instance 0 first, B instance 1 (the other way
    // through a 100 ms proxy): a split vote, in which the first of each takes one key and loses
    await clients[2]?.set("fan-out", "other", "PX", 10_000);
    const proxies = await Promise.all(first(3).map((_, i) => startDelayProxy(cluster.servers[i]?.port as number)));
    const opened: Redis[] = [];
    const monitors: Monitor[] = [];
    const through = (i: number, delayed: boolean) => {
      const proxy = proxies[i] as DelayProxy;
      const client = (cluster.servers[i] as RedisServer).client(delayed ? { port: proxy.port } : {});
      opened.push(client);
      return client;
    };
    try {
      for (const proxy of proxies.slice(0, 2)) proxy.upDelayMs = 100;
      const a = new Redlock([through(0, false), through(1, true), through(2, false)], { retryCount: 0 });
      const b = new Redlock([through(0, true), through(1, false), through(2, false)], { retryCount: 0 });
      await Promise.all(opened.map((client) => client.ping()));
      // the monitors send their marks (ECHO) on the test's own clients: no connection of their own to close
      monitors.push(...(await Promise.all(first(2).map((client) => startMonitor(client)))));
      const calls = Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? a : b).lock("fan-out", 5000));
      expect(await Promise.all(calls)).toEqual(Array.from({ length: 100 }, () => null));
      // read at once, not polled: what the losers took was deleted before their calls returned
      expect(await values("fan-out", 3)).toEqual([null, null, "other"]);
      // the split really happened: each of instances 0 and 1 granted its key to one call first
      for (const monitor of monitors) {
        await monitor.caughtUp();
        const acquires = monitor.seen.filter((executed) => scriptOf(executed) === "acquire");
        const valuesSent = acquires.map((executed) => executed.args[2]);
        // one attempt per call, each with a value of its own
        expect(new Set(valuesSent).size).toBe(100);
        const givenBack = monitor.seen.filter((executed) => scriptOf(executed) === "release");
        // the release script's ARGV[1], after its keys: the first call here took the key and gave it back
        const releasedValue = (executed: { args: readonly string[] }) => executed.args[3 + Number(executed.args[2])];
        expect(givenBack.map(releasedValue)).toContain(valuesSent[0]);
      }
    } finally {
      await Promise.all(monitors.map((monitor) => monitor.close()));
      for (const client of opened) client.disconnect();
      await Promise.all(proxies.map((proxy) => proxy.close()));
    }
  });

  it("returns null when a majority is held by others and leaves none of its keys behind", async () => {
    const dlm = new Redlock(first(3), { retryCount: 2, retryDelay: 10 });
    await clients[0]?.set("majority", "other", "PX", 5000);
    await clients[1]?.set("majority", "other", "PX", 5000);
    // contention needs every instance's answer in time: a 1 s ttl's 100 ms bound was missed on a
    // loaded machine (unavailable instead); 10 s gives 1 s, and nothing waits for it
    expect(await dlm.lock("majority", 10_000)).toBeNull();
    expect(await values("majority", 3)).toEqual(["other", "other", null]);
  });

  it("counts a key that already holds its own value as acquired (a re-sent SET after a reconnect)", async () => {
    const store = new RedisStore(clients[0] as Redis);
    expect((await store.acquire(["mine"], "v1", 1000)).acquired).toBe(true);
    expect((await store.acquire(["mine"], "v1", 1000)).acquired).toBe(true);
    const refused = await store.acquire(["mine"], "v2", 1000);
    expect(refused.acquired).toBe(false);
  });

  it("acquires fast with one of three instances paused, and unlock does not hang on it", async () => {
    const servers = cluster.servers.slice(0, 3);
    // both calls resolve at the live instances' quorum, before any bound: a short one only made
    // them fail when a live instance answered late on a loaded machine
    const dlm = new Redlock(first(3), { instanceTimeout: 1000 });
    (servers[2] as RedisServer).pause();
    // answered only after the resume, below
    const probe = unanswered((clients[2] as Redis).ping());
    const lock = await dlm.acquire("paused", 2000);
    // the two live instances form the quorum: the paused one costs no validity
    expect(lock.valid).toBe(true);
    expect(await dlm.unlock(lock)).toBe(true);
    // neither call waited for the paused instance (one that did never returns: the test's timeout)
    expect(probe.answered).toBe(false);
    (servers[2] as RedisServer).resume();
    // the SET left unanswered lands after the resume; the queued release follows it on the same connection
    await sleep(100);
    await expect.poll(() => values("paused", 3)).toEqual([null, null, null]);
  });
});

describe("Redlock quorum with five instances", () => {
  it("locks with 2 of 5 down", async () => {
    await cluster.servers[3]?.kill();
    await cluster.servers[4]?.kill();
    // the three live instances are a quorum: nothing waits for the bound (a short one only failed
    // the call when a live instance answered late on a loaded machine)
    const dlm = new Redlock(clients, { instanceTimeout: 1000, retryCount: 0 });
    const lock = await dlm.acquire("q", 2000);
    expect(lock.valid).toBe(true);
    expect(await dlm.unlock(lock)).toBe(true);
  });

  it("throws LockUnavailableError (not contention) with 3 of 5 down, with redacted per-instance causes", async () => {
    await cluster.servers[2]?.kill();
    await cluster.servers[3]?.kill();
    await cluster.servers[4]?.kill();
    // the killed instances fail whatever the bound: BOUND, not 100 ms, lets the live ones answer
    const dlm = new Redlock(clients, { instanceTimeout: BOUND, retryCount: 1, retryDelay: 10 });
    const error = await dlm.lock("q", 2000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    const unavailable = error as LockUnavailableError;
    expect(unavailable.status).toBe(503);
    expect(unavailable.causes.map((cause) => cause.instance)).toEqual([2, 3, 4]);
    for (const cause of unavailable.causes) expect(Object.keys(cause.error)).not.toContain("command");
    // the two live instances must not keep our value
    expect(await values("q", 2)).toEqual([null, null]);
  });

  it("classifies a quorum held by others plus a dead minority as contention", async () => {
    await cluster.servers[4]?.kill();
    for (const client of first(3)) await client.set("mixed", "other", "PX", 3000);
    const dlm = new Redlock(clients, { instanceTimeout: BOUND, retryCount: 0 });
    const error = await dlm.acquire("mixed", 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockContentionError);
  });
});

/** Stores on `clients` that tell `extended(ttl)` of every extension they send. */
const extensionsTold = (clients: readonly Redis[], extended: (ttl: number) => void) =>
  clients.map((client) => {
    const store = new RedisStore(client);
    return {
      acquire: store.acquire.bind(store),
      release: store.release.bind(store),
      extend(keys: readonly string[], value: string, ttl: number) {
        extended(ttl);
        return store.extend(keys, value, ttl);
      },
    };
  });

describe("Redlock.using", () => {
  it("extends automatically while fn runs and releases afterwards", async () => {
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    const other = new Redlock(first(3), { retryCount: 0, instanceTimeout: BOUND });
    // 2 s, renewed at half of it: a renewal up to ~1 s late still comes in time; the section lasts
    // until it came, not a sleep past the ttl
    const result = await dlm.using("long", 2000, async (signal, lock) => {
      const taken = lock.expiresAt;
      const [renewal] = await arrival(nextExtensions("long", 1), "the lock's renewal");
      expect(renewal?.extended).toBe(true);
      // its validity now ends later than the ttl it was taken with allowed
      expect(lock.expiresAt).toBeGreaterThan(taken);
      expect(signal.aborted).toBe(false);
      expect(lock.valid).toBe(true);
      expect(await other.lock("long", 2000)).toBeNull();
      return 42;
    });
    expect(result).toBe(42);
    await expect.poll(() => values("long", 3)).toEqual([null, null, null]);
  });

  it.each([
    ["twice its own ttl", 4000],
    ["a shorter ttl than its renewal margin", 1000],
  ])("keeps renewing the lock after a manual extend() to %s", async (_, manualTtl) => {
    const dlm = new Redlock(first(3));
    // 2 s, renewed at half of it: a renewal up to ~1 s late still comes in time
    const outcome = await dlm.using("manual-extend", 2000, async (signal, lock) => {
      await lock.extend(manualTtl);
      // before: the renewal, due when the first validity ran low, found the longer one and never
      // came again, or came after the shorter one had ended; the lock lapsed while fn ran
      const renewal = nextExtensions("manual-extend", 1, { succeeded: true });
      const came = await Promise.race([renewal.then(() => "renewed"), aborted(signal).then(() => "lost")]);
      renewal.stop();
      return { came, valid: lock.valid };
    });
    expect(outcome).toEqual({ came: "renewed", valid: true });
    await expect.poll(() => values("manual-extend", 3)).toEqual([null, null, null]);
  });

  it("a manual extend() answered after the renewal sent behind it keeps the renewal's validity, never later than the keys' expiry", async () => {
    const key = "overtaken";
    // the Redlock's own connections, named to be found in CLIENT LIST
    const own = first(3).map((_, i) => (cluster.servers[i] as RedisServer).client({ connectionName: "overtaken" }));
    const admins = first(3).map((_, i) => (cluster.servers[i] as RedisServer).client());
    const ours = async (admin: Redis) =>
      String(await admin.call("CLIENT", "LIST"))
        .split("\n")
        .find((line) => / name=overtaken /.test(line)) ?? "";
    try {
      // a bound no held-back answer reaches: each extension counts every instance's yes
      const dlm = new Redlock(own, { instanceTimeout: 3000 });
      const renewed = nextExtensions(key, 2);
      const outcome = await dlm.using(key, 4000, async (signal, lock) => {
        // the servers hold their writes back: the manual extension (for 20 s) waits on each of them
        await Promise.all(admins.map((admin) => admin.call("CLIENT", "PAUSE", 60_000, "WRITE")));
        const manual = lock.extend(20_000).then(
          () => "extended",
          (error: unknown) => error,
        );
        await expect
          .poll(() => Promise.all(admins.map(ours)))
          .toSatisfy((lines: string[]) => lines.every((line) => / flags=\S*b/.test(line)));
        // another Redlock's client says who it is: the connections the manual extension went out on
        // may have changed since, so its votes are checked (voided()) before they count
        const elsewhere = (cluster.servers[3] as RedisServer).client();
        const other = new Redlock([elsewhere]);
        await (await other.acquire("elsewhere", 1000)).release();
        await other.quit();
        elsewhere.disconnect();
        // the renewal (for the 4 s ttl, due at half of the validity the acquisition gave) waits behind
        // it on every connection
        await expect
          .poll(() => Promise.all(admins.map(ours)), { timeout: 5000 })
          .toSatisfy((lines: string[]) => lines.every((line) => / qbuf=[1-9]/.test(line)));
        // each server runs both and answers them in one write
        await Promise.all(admins.map((admin) => admin.call("CLIENT", "UNPAUSE")));
        const extensions = await arrival(renewed, "both extensions' outcomes");
        const expiries = await Promise.all(
          first(3).map((client) => client.call("PEXPIRETIME", key) as Promise<number>),
        );
        return {
          manual: await manual,
          extended: extensions.map((extension) => extension.extended),
          aborted: signal.aborted,
          // the validity the lock reports ends no later than its keys do on a quorum (the renewal's 4 s)
          withinKeys: lock.expiresAt <= Math.min(...expiries),
        };
      });
      // before: the manual extension, sent first, was counted last and set the validity to its 20 s:
      // the lock said it held for 16 s more while its keys expired 4 s after the renewal
      expect(outcome).toEqual({ manual: "extended", extended: [true, true], aborted: false, withinKeys: true });
    } finally {
      await Promise.all(admins.map((admin) => admin.call("CLIENT", "UNPAUSE")));
      for (const client of [...own, ...admins]) client.disconnect();
    }
  });

  it("aborts the signal with LockLostError when an extension fails, and still releases", async () => {
    const dlm = new Redlock(first(3));
    let reason: unknown;
    // 2 s, renewed at half of it: a renewal up to ~1 s late still comes before the validity timer,
    // which would abort the signal too, without any extension (its own message)
    await dlm.using("lost", 2000, async (signal) => {
      await Promise.all(first(3).map((client) => client.set("lost", "thief", "PX", 5000)));
      await aborted(signal);
      reason = signal.reason;
    });
    expect(reason).toBeInstanceOf(LockLostError);
    // the failed renewal reported it (before, with a 300 ms ttl, a using() that never renewed passed)
    expect((reason as Error).message).toMatch(/could not be extended on a quorum \(0 of 3/);
    expect(await values("lost", 3)).toEqual(["thief", "thief", "thief"]);
  });

  it("stops extending at maxHoldMs, extending once up to the cap rather than again and again by the drift, and aborts when the validity ends", async () => {
    // every extension sent: for how long, and a time no later than the clock reading the library
    // computed that ttl from (the same turn of the event loop)
    const requests: { from: number; ttl: number }[] = [];
    const { clock, firstReadThisTurn } = turnClock();
    const told = (ttl: number) => requests.push({ from: firstReadThisTurn() ?? Number.NaN, ttl });
    const dlm = new Redlock(extensionsTold(first(3), told), { clock });
    let started = 0;
    const ends = { taken: 0, aborted: 0 };
    // a 2 s ttl renewed at half of it (a renewal up to ~1 s late still comes in time), and a cap that
    // first renewal reaches: only it keeps the lock past its ttl (before: 200 ms and 1 s ttls, lost
    // or cut short by a renewal run 100 ms or 24 ms late)
    await dlm.using(
      "capped",
      2000,
      async (signal, lock) => {
        started = performance.now();
        ends.taken = lock.expiresAt;
        // a lock extended past the cap fails as never ended
        await arrival(aborted(signal), "the lock's end at the cap");
        ends.aborted = lock.expiresAt;
      },
      { maxHoldMs: 2200 },
    );
    // renewed past the first ttl, and never asked to last past the cap: counted from a time no
    // later than the library's reading, to a cap no earlier than its own (set before fn started)
    expect(ends.aborted).toBeGreaterThan(ends.taken);
    expect(Math.max(...requests.map(({ from, ttl }) => from + ttl))).toBeLessThanOrEqual(started + 2200);
    // one renewal, up to the cap (short of the ttl), sent to the 3 instances (twice at most, if too
    // few answered the first time); it ends a drift (14 ms here) short of the cap, which must not
    // start another, nor the extension after that
    expect(requests.length).toBeGreaterThanOrEqual(3);
    expect(requests.length).toBeLessThanOrEqual(6);
    expect(requests.every(({ ttl }) => ttl < 2000)).toBe(true);
  });

  it("with a per-instance timeout close to the ttl, renews about once per half ttl rather than back to back", async () => {
    let requests = 0;
    const dlm = new Redlock(extensionsTold(first(1), () => requests++));
    let held = 0;
    // 2 s, renewed at half of it (a renewal up to ~1 s late still comes in time): the section lasts
    // until its first renewal, whenever that comes (before: a 1 s ttl and a 1200 ms sleep)
    await dlm.using(
      "timeout-near-ttl",
      2000,
      async () => {
        const started = performance.now();
        await arrival(nextExtensions("timeout-near-ttl", 1), "its renewal");
        held = performance.now() - started;
      },
      { instanceTimeout: 1999 },
    );
    // renewed ~990 ms in (half of the 1978 ms the lock got; a late renewal only later); before, at
    // once and then once per round trip
    expect(requests).toBeGreaterThanOrEqual(1);
    expect(held).toBeGreaterThan(500);
    expect(await values("timeout-near-ttl", 1)).toEqual([null]);
  });

  it("releases when fn throws and rethrows fn's error unchanged", async () => {
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    const boom = new Error("boom");
    await expect(
      dlm.using("throws", 1000, () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    await expect.poll(() => values("throws", 3)).toEqual([null, null, null]);
  });
});

describe("Redlock options and lifecycle", () => {
  it("waits for a held lock up to `wait` ms", async () => {
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    const held = await dlm.acquire("waiting", 5000);
    const waiting = dlm.acquire("waiting", 1000, { wait: 2000, retryDelay: 20, retryJitter: 10 });
    // released once the waiter was refused and queued on every instance, not after a guessed time:
    // released first, it took the key at its first attempt and never waited
    await expect
      .poll(() => Promise.all(first(3).map((client) => client.zcard("waiting:redlock-kit:waiters"))))
      .toEqual([1, 1, 1]);
    await held.release();
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
    const again = await dlm.acquire("waiting", 5000);
    // wait: 0 is one attempt, whatever retryCount says, and no retry's sleep (200 + 0..100 ms)
    const timers = recordTimeouts((ms) => ms >= 200 && ms <= 300);
    try {
      const attempts = await attemptsOf(
        "waiting",
        async () => {
          expect(await dlm.lock("waiting", 1000, { wait: 0 })).toBeNull();
        },
        "contention",
      );
      expect(attempts).toEqual([1]);
      expect(timers.delays).toEqual([]);
    } finally {
      timers.restore();
    }
    await again.release();
  });

  it("stops waiting when the signal aborts, with the signal's reason", async () => {
    const dlm = new Redlock(first(3));
    const held = await dlm.acquire("abort", 5000);
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("gave up")), 100);
    await expect(dlm.acquire("abort", 1000, { wait: 5000, signal: controller.signal })).rejects.toThrow("gave up");
    await held.release();
  });

  it("leaves no listener on a signal that outlives the waiting calls it was given", async () => {
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    const held = await dlm.acquire("shared-signal", 5000);
    const { signal } = new AbortController();
    const calls = Array.from({ length: 3 }, () =>
      dlm.acquire("shared-signal", 1000, { wait: 10_000, signal }).then((lock) => lock.release()),
    );
    // each call listens to the signal until it ends (for its promise), and from its first sleep (to cut it short)
    await expect.poll(() => getEventListeners(signal, "abort").length).toBe(6);
    await held.release();
    await Promise.all(calls);
    expect(getEventListeners(signal, "abort")).toEqual([]);
    expect(signal.aborted).toBe(false);
  });

  it("rejects with the signal's reason when it aborts while the winning attempt is on its way, and releases what it took", async () => {
    const dlm = new Redlock(first(3));
    const controller = new AbortController();
    const acquiring = dlm.acquire("abort-late", 5000, { signal: controller.signal });
    // the attempt's commands are already sent: it takes the keys, then finds the call aborted
    controller.abort(new Error("too late"));
    await expect(acquiring).rejects.toThrow("too late");
    await expect.poll(() => values("abort-late", 3)).toEqual([null, null, null]);
  });

  it("sends no attempt, and rejects at once, when the signal aborts while it waits to learn which servers its new connections reach", async () => {
    // the servers' replies held: the connections Redlock creates cannot say who they reach yet
    const proxies = await Promise.all(first(3).map((_, i) => startDelayProxy(cluster.servers[i]?.port as number)));
    for (const proxy of proxies) proxy.holdNewReplies = true;
    const monitors = await Promise.all(first(3).map((client) => startMonitor(client)));
    const dlm = new Redlock(
      proxies.map((proxy) => ({ host: "127.0.0.1", port: proxy.port })),
      { instanceTimeout: 30_000, retryCount: 0 },
    );
    try {
      const controller = new AbortController();
      const acquiring = dlm.acquire("abort-unidentified", 60_000, { signal: controller.signal });
      const order: string[] = [];
      acquiring.catch(() => order.push("rejected"));
      // every server answered something (the connection's own checks) that the call waits for
      await expect.poll(() => proxies.every((proxy) => proxy.heldReplyBytes > 0)).toBe(true);
      controller.abort(new Error("client left"));
      // before: it rejected only once the servers answered (or the per-instance timeout passed)
      await expect.poll(() => order).toEqual(["rejected"]);
      order.push("replies let through");
      for (const proxy of proxies) proxy.releaseReplies();
      await expect(acquiring).rejects.toThrow("client left");
      for (const monitor of monitors) await monitor.caughtUp();
      // before: an attempt was sent once the servers answered, took the key everywhere (a rival
      // meanwhile refused) and was given back
      expect(monitors.map((monitor) => monitor.seen.filter((executed) => scriptOf(executed) === "acquire"))).toEqual([
        [],
        [],
        [],
      ]);
      expect(await values("abort-unidentified", 3)).toEqual([null, null, null]);
    } finally {
      await dlm.quit();
      await Promise.all(monitors.map((monitor) => monitor.close()));
      await Promise.all(proxies.map((proxy) => proxy.close()));
    }
  });

  it("rejects at once when the signal aborts while its attempt's replies are on their way, and gives back what it took", async () => {
    const proxies = await Promise.all(first(3).map((_, i) => startDelayProxy(cluster.servers[i]?.port as number)));
    // a per-instance timeout longer than expect.poll waits: the replies are what the call waits for
    const dlm = new Redlock(
      proxies.map((proxy) => ({ host: "127.0.0.1", port: proxy.port })),
      { instanceTimeout: 30_000, retryCount: 0 },
    );
    try {
      // the connections are open and know which servers they reach
      await (await dlm.acquire("abort-in-flight-warm-up", 60_000)).release();
      await expect.poll(() => values("abort-in-flight-warm-up", 3)).toEqual([null, null, null]);
      for (const proxy of proxies) proxy.holdReplies();
      const controller = new AbortController();
      const acquiring = dlm.acquire("abort-in-flight", 60_000, { signal: controller.signal });
      const order: string[] = [];
      acquiring.catch(() => order.push("rejected"));
      // the attempt ran on every server; the call waits for the replies
      await expect.poll(async () => (await values("abort-in-flight", 3)).every((value) => value !== null)).toBe(true);
      controller.abort(new Error("client left"));
      // before: it rejected only once the replies came (or the per-instance timeout passed)
      await expect.poll(() => order).toEqual(["rejected"]);
      order.push("replies let through");
      for (const proxy of proxies) proxy.releaseReplies();
      await expect(acquiring).rejects.toThrow("client left");
      // the call, no longer awaited, still gives back what its attempt took
      await expect.poll(() => values("abort-in-flight", 3)).toEqual([null, null, null]);
    } finally {
      await dlm.quit();
      await Promise.all(proxies.map((proxy) => proxy.close()));
    }
  });

  it("arms no validity timer for a lock until its signal is read", async () => {
    // a minute's lock: only a timer for the end of its validity is this long
    const { delays: armed, restore } = recordTimeouts((ms) => ms > 30_000);
    try {
      const dlm = new Redlock(first(3));
      const lock = await dlm.acquire("unwatched", 60_000);
      expect(lock.valid && lock.remainingMs > 30_000).toBe(true);
      expect(armed).toEqual([]);
      expect(lock.signal.aborted).toBe(false);
      expect(armed).toHaveLength(1);
      await lock.release();
    } finally {
      restore();
    }
  });

  it("reads its signal as aborted once its validity has ended, before any timer fired: first read then, or read before", async () => {
    // the injected clock passes the validity while no real time does: no timer is due for a minute
    let now = 1_000_000;
    const dlm = new Redlock(first(3), { clock: () => now });
    const unread = await dlm.acquire("lapsed:unread", 60_000);
    const read = await dlm.acquire("lapsed:read", 60_000);
    expect(read.signal.aborted).toBe(false);
    now += 60_000;
    const seen = [unread, read].map((lock) => ({ valid: lock.valid, aborted: lock.signal.aborted }));
    // before: a signal first read now was a fresh one, and one read before aborted only when its timer fired
    expect(seen).toEqual([
      { valid: false, aborted: true },
      { valid: false, aborted: true },
    ]);
    for (const lock of [unread, read]) {
      expect(lock.signal.reason).toBeInstanceOf(LockLostError);
      expect((lock.signal.reason as Error).message).toMatch(/validity ended/);
    }
    // the keys themselves are still there (no real time passed): the releases delete them
    expect(await Promise.all([unread.release(), read.release()])).toEqual([true, true]);
  });

  it("reads its signal as aborted once an event loop blocked past the validity resumes, before its timer fired", async () => {
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    const lock = await dlm.acquire("blocked", 1000);
    const early = await dlm.acquire("blocked:early", 1000);
    const signal = early.signal;
    // a synchronous stretch until both validities ended: no timer can fire inside it
    while (lock.valid || early.valid) {
      // CPU-bound work, a GC pause
    }
    // before: { unread: false, early: false }, though neither lock was valid any more
    expect({ unread: lock.signal.aborted, early: early.signal.aborted }).toEqual({ unread: true, early: true });
    expect(signal).toBe(early.signal);
    await Promise.all([lock.release(), early.release()]);
  });

  it("supports await using", async () => {
    const dlm = new Redlock(first(3), { instanceTimeout: BOUND });
    {
      await using lock = await dlm.acquire("disposable", 1000);
      expect(lock.valid).toBe(true);
    }
    await expect.poll(() => values("disposable", 3)).toEqual([null, null, null]);
  });

  it("applies keyPrefix to the Redis keys but not to lock.resources", async () => {
    const dlm = new Redlock(first(3), { keyPrefix: "lock:", instanceTimeout: BOUND });
    const lock = await dlm.acquire("p", 1000);
    expect(lock.resources).toEqual(["p"]);
    await expect.poll(() => values("lock:p", 3)).toEqual([lock.value, lock.value, lock.value]);
    await lock.release();
  });

  it("creates clients from options and URLs, closes only those in quit(), and never closes handed clients", async () => {
    const [a, b, c] = cluster.servers as [RedisServer, RedisServer, RedisServer];
    const handed = a.client();
    // new connections: each says who it is before it votes, within the call's bound
    const dlm = new Redlock([handed, { host: "127.0.0.1", port: b.port }, `redis://127.0.0.1:${c.port}`], {
      instanceTimeout: BOUND,
    });
    const lock = await dlm.acquire("owned", 1000);
    await lock.release();
    await dlm.quit();
    expect(await handed.ping()).toBe("PONG");
    const stores = dlm.stores as RedisStore[];
    expect((stores[1] as RedisStore).client.status).toBe("end");
    expect((stores[2] as RedisStore).client.status).toBe("end");
  });

  it("rejects the same client, store or server given twice", () => {
    const client = clients[0] as Redis;
    expect(() => new Redlock([client, client])).toThrow(TypeError);
    const store = new MemoryStore();
    expect(() => new Redlock([store, store])).toThrow(/vote twice/);
    const port = cluster.servers[0]?.port;
    expect(() => new Redlock([client, { host: "127.0.0.1", port }])).toThrow(/same Redis database/);
  });
});
