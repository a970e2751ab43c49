/**
 * Servers that answer badly rather than not at all (docs/reliability.md F8–F11, F15, F17): OOM,
 * BUSY, a write pause, lost scripts and keys after a restart, and ioredis clients left at their
 * defaults. Each costs one vote, never the library's own deadlines.
 */
import { LockContentionError, LockLostError, LockUnavailableError, Redlock } from "@redlock-kit/core";
import { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { aborted } from "../helpers/aborted.js";
import { useInvariants } from "../helpers/invariants.js";
import { nextRelease } from "../helpers/lock-events.js";
import { insideScripts, scriptOf, sentByClientsWith, startMonitors } from "../helpers/monitor.js";
import { heldByQuorum } from "../helpers/quorum.js";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";
import { unanswered } from "../helpers/unanswered.js";
import { warmUp } from "../helpers/warm-up.js";

const cluster = useRedisServers(3);
const invariants = useInvariants(cluster, { maxTtlMs: 2000 });
let direct: Redis[] = [];

beforeAll(async () => {
  direct = cluster.servers.map((server) => server.client());
  await warmUp(new Redlock(direct), { quit: true });
});

const server = (i: number) => cluster.servers[i] as RedisServer;
const valuesOf = (key: string) => Promise.all(direct.map((client) => client.get(key)));

/** Runs `fn` with `maxmemory 1` (noeviction) on the given nodes: every write that needs memory answers OOM. */
async function withOom<T>(nodes: number[], fn: () => Promise<T>): Promise<T> {
  const clients = nodes.map((i) => direct[i] as Redis);
  await Promise.all(clients.map((client) => client.config("SET", "maxmemory-policy", "noeviction")));
  await Promise.all(clients.map((client) => client.config("SET", "maxmemory", "1")));
  try {
    return await fn();
  } finally {
    await Promise.all(clients.map((client) => client.config("SET", "maxmemory", "0")));
  }
}

describe("OOM (maxmemory 1, noeviction)", () => {
  it("on one node: the lock is taken on the other two", async () => {
    const dlm = new Redlock(direct, { retryCount: 0 });
    await withOom([2], async () => {
      const lock = await dlm.acquire("oom:one", 2000);
      expect(await valuesOf("oom:one")).toEqual([lock.value, lock.value, null]);
      expect(await lock.release()).toBe(true);
    });
    await expect.poll(() => valuesOf("oom:one")).toEqual([null, null, null]);
  });

  it("on two nodes: unavailable (503), not contention (423), and the third node keeps nothing", async () => {
    const dlm = new Redlock(direct, { retryCount: 0 });
    const error = await withOom([1, 2], () => dlm.lock("oom:two", 2000).catch((e: unknown) => e));
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect(error).not.toBeInstanceOf(LockContentionError);
    expect((error as LockUnavailableError).status).toBe(503);
    expect((error as LockUnavailableError).causes.map((cause) => cause.error.message)).toEqual([
      expect.stringContaining("OOM"),
      expect.stringContaining("OOM"),
    ]);
    await expect.poll(() => valuesOf("oom:two")).toEqual([null, null, null]);
  });

  it("on every node: a held lock can still be extended (PEXPIRE) and released (DEL) by the scripts", async () => {
    const dlm = new Redlock(direct, { retryCount: 0 });
    // a ttl long enough that the lock is still valid here whatever the machine's load: the extend
    // must be decided by Redis, not refused by the library for a validity that ran out meanwhile
    const lock = await dlm.acquire("oom:held", 10_000);
    await expect.poll(() => valuesOf("oom:held")).toEqual([lock.value, lock.value, lock.value]);
    const monitors = await startMonitors(cluster.servers, invariants);
    await withOom([0, 1, 2], async () => {
      // a plain write is refused: the extend and release below really run under OOM
      await expect(direct[0]?.set("oom:probe", "1")).rejects.toThrow(/OOM/);
      expect(lock.valid).toBe(true);
      await dlm.extend(lock, 30_000);
      for (const client of direct) expect(await client.pttl("oom:held")).toBeGreaterThan(10_000);
      expect(await lock.release()).toBe(true);
    });
    for (const monitor of monitors) {
      await monitor.caughtUp();
      const calls = sentByClientsWith(monitor.seen, lock.value);
      expect(calls.map(scriptOf)).toEqual(["extend", "release"]);
      // inside the scripts: the compare, PEXPIRE (SET would be refused), then the compare and DEL
      // (after the look at the key's queue of waiters, empty here)
      expect(insideScripts(monitor.seen, calls).filter((name) => name !== "exists")).toEqual([
        "get",
        "pexpire",
        "get",
        "del",
      ]);
    }
    await expect.poll(() => valuesOf("oom:held")).toEqual([null, null, null]);
  });

  it("on every node: a looper's release, which reserves the key for its next call (mode 'R'), still releases it", async () => {
    // `a`'s clock runs 100 times slow: however long the steps below take on a loaded machine, its
    // section counts as shorter than MAX_HELD_MS, so that its release is a retake
    const a = new Redlock(direct, { retryCount: 0, clock: () => performance.now() / 100 });
    const b = new Redlock(direct, { retryCount: 0 });
    // `a` listens for hand-overs (a call of its own waits on another key), so its releases may retake
    const blocker = await b.acquire("oom:blocker", 10_000);
    const listening = a.acquire("oom:blocker", 10_000, { wait: 30_000, signal: AbortSignal.timeout(15_000) });
    await expect.poll(() => direct[0]?.zcard("oom:blocker:redlock-kit:waiters")).toBe(1);
    const monitors = await startMonitors(cluster.servers, invariants);
    await a.unlock(await a.acquire("oom:looper", 10_000));
    // acquired in the turn its own release of the key resolved: a looper, whose release reserves
    const lock = await a.acquire("oom:looper", 10_000);
    await withOom([0, 1, 2], async () => {
      await expect(direct[0]?.set("oom:probe", "1")).rejects.toThrow(/OOM/);
      expect(await a.unlock(lock)).toBe(true);
      // the lock's value is gone everywhere, replaced by the reservation (let go at the turn's end)
      for (const value of await valuesOf("oom:looper")) expect(value).not.toBe(lock.value);
    });
    for (const monitor of monitors) {
      await monitor.caughtUp();
      const calls = sentByClientsWith(monitor.seen, lock.value);
      expect(calls.map(scriptOf)).toEqual(["acquire", "release"]);
      // in the release: the compare, DEL (the write Redis checks against maxmemory), then the reservation's SET
      expect(insideScripts(monitor.seen, calls.slice(1))).toEqual(["get", "del", "set"]);
    }
    await expect.poll(() => valuesOf("oom:looper")).toEqual([null, null, null]);
    await b.unlock(blocker);
    await a.unlock(await listening);
    await Promise.all([a.quit(), b.quit()]);
  });
});

describe("BUSY (a script spinning past busy-reply-threshold)", () => {
  it("costs one vote per call on that node, no retry storm, and SCRIPT KILL restores it", async () => {
    const busy = direct[2] as Redis;
    const errors = async () => Number(/errorstat_BUSY:count=(\d+)/.exec(await busy.info("errorstats"))?.[1] ?? 0);
    const before = await errors();
    await busy.config("SET", "busy-reply-threshold", "100");
    const spinner = invariants.client(server(2));
    const killer = invariants.client(server(2));
    // connected before the spin: a connection made during it would have its ready check (INFO)
    // answered BUSY too, one more than the calls counted below
    const probe = invariants.client(server(2), { maxRetriesPerRequest: 0 });
    await Promise.all([spinner.ping(), killer.ping(), probe.ping()]);
    const spinning = spinner.eval("while true do end", 0).catch((e: unknown) => e);
    try {
      let answer = "";
      for (let i = 0; i < 100 && !answer.startsWith("BUSY"); i++) {
        // a read: a probe that lands before the spin starts must not leave a key without a ttl
        answer = await probe.get("busy:probe").then(String, (e: Error) => e.message);
        if (!answer.startsWith("BUSY")) await sleep(20);
      }
      expect(answer).toMatch(/^BUSY/);

      const dlm = new Redlock(direct, { retryCount: 0 });
      const lock = await dlm.acquire("busy:r", 2000);
      expect(await Promise.all(direct.slice(0, 2).map((client) => client.get("busy:r")))).toEqual([
        lock.value,
        lock.value,
      ]);
      expect(await lock.release()).toBe(true);
      expect(await killer.script("KILL")).toBe("OK");
      expect(String(await spinning)).toMatch(/Script killed/);
      // the probe's refusal, one acquire and one release: each answered BUSY once, none was retried
      expect((await errors()) - before).toBe(3);

      const after = await dlm.acquire("busy:r", 2000);
      await expect.poll(() => valuesOf("busy:r")).toEqual([after.value, after.value, after.value]);
      await after.release();
    } finally {
      await killer.script("KILL").catch(() => {});
      await busy.config("SET", "busy-reply-threshold", "5000");
    }
  });
});

describe("CLIENT PAUSE WRITE on one node", () => {
  it("acquires on the other two within the per-instance timeout; the blocked script runs on UNPAUSE and is released", async () => {
    const paused = direct[2] as Redis;
    const admin = invariants.client(server(2));
    await admin.client("PAUSE", 10_000, "WRITE");
    try {
      // both calls resolve at the quorum of the other two, before any bound: a short one only made
      // them fail when one of those answered late on a loaded machine
      const dlm = new Redlock(direct, { retryCount: 0, instanceTimeout: 1000 });
      // a write the pause holds back until UNPAUSE (or the pause's end, 10 s on)
      const probe = unanswered(paused.del("pause:probe"));
      const lock = await dlm.acquire("pause:r", 2000);
      const unlocked = await lock.release();
      // the pause still held: neither call waited for the paused node
      expect(probe.answered).toBe(false);
      expect(unlocked).toBe(true);
      expect(await Promise.all(direct.slice(0, 2).map((client) => client.get("pause:r")))).toEqual([null, null]);
    } finally {
      await admin.client("UNPAUSE");
    }
    // the acquire script and then the release ran on UNPAUSE, in that order, on one connection
    await paused.ping();
    await expect.poll(() => valuesOf("pause:r")).toEqual([null, null, null]);
  });
});

describe("script cache and keys lost to a restart", () => {
  it("a restart of every node between acquire and release: unlock says false without throwing, extend refuses, a new lock works", async () => {
    const dlm = new Redlock(direct, { retryCount: 0 });
    const lock = await dlm.acquire("restart:r", 2000);
    // acquire resolves at the quorum: let the third SET land so that the restart, not ioredis's
    // re-send of an in-flight command, decides what the nodes hold
    await expect.poll(() => valuesOf("restart:r")).toEqual([lock.value, lock.value, lock.value]);
    invariants.faultInjected();
    await Promise.all(cluster.servers.map((s) => s.restart()));
    await Promise.all(direct.map((client) => client.ping()));
    // the new connections vote once they said who they are: the extension waits 200 ms for that,
    // and without their votes it is unavailable rather than refused (warmed by a Redlock of its
    // own: dlm's scripts are still to be sent on them)
    await warmUp(new Redlock(direct), { quit: true });
    await expect.poll(() => valuesOf("restart:r")).toEqual([null, null, null]);
    await expect(dlm.extend(lock, 2000)).rejects.toBeInstanceOf(LockLostError);
    expect(lock.signal.aborted).toBe(true);
    expect(await lock.release()).toBe(false);
    // fresh servers: the scripts are reloaded through the NOSCRIPT fallback
    const next = await dlm.acquire("restart:r", 2000);
    // acquire resolves once a quorum said yes; the third may still be reloading its script
    expect(await valuesOf("restart:r")).toSatisfy((values: (string | null)[]) => heldByQuorum(values, next.value));
    expect(await next.release()).toBe(true);
  });

  it("a restart during auto-extension: the renewal finds the keys gone and aborts the signal with LockLostError, using() settles, its release says false", async () => {
    const dlm = new Redlock(direct, { instanceTimeout: 50 });
    invariants.faultInjected();
    let reason: unknown;
    const released = nextRelease("restart:auto");
    // 4 s: renewed at half of it, so a renewal up to ~2 s late still comes before the validity
    // timer, which would abort the signal too, without any extension (its own message)
    const result = await dlm.using("restart:auto", 4000, async (signal) => {
      // acquire resolves at the quorum: the third node may not have run its SET yet, and ioredis
      // sends it again once that node restarted, where the renewal would then extend it
      await Promise.all(direct.map((client) => client.ping()));
      await Promise.all(cluster.servers.map((s) => s.restart()));
      // reconnected (the Redlock's clients), so that the renewal reaches the empty servers
      await Promise.all(direct.map((client) => client.ping()));
      await aborted(signal);
      reason = signal.reason;
      return "settled";
    });
    expect(result).toBe("settled");
    expect(reason).toBeInstanceOf(LockLostError);
    // the renewal reported it, not the validity's end: before, a using() that never renewed passed
    expect((reason as Error).message).toMatch(/could not be extended on a quorum \(0 of 3/);
    expect((await released).released).toBe(false);
    const next = await dlm.acquire("restart:auto", 1000);
    await next.release();
  });
});

/** One ioredis client per node with every option at its default. */
function clientsAtDefaults(): Redis[] {
  return cluster.servers.map((s) => {
    const client = invariants.track(new Redis({ host: "127.0.0.1", port: s.port }));
    // a listener only, so that the refused connections are not printed; no option is changed
    client.on("error", () => {});
    return client;
  });
}

describe("ioredis clients left at their defaults (offline queue on, 20 retries per request)", () => {
  it("with a node down from the start, lock and unlock are bounded by the library's own deadlines", async () => {
    await server(2).kill();
    invariants.faultInjected();
    const defaults = clientsAtDefaults();
    // both calls resolve at the quorum of the live two, before any bound (a short one only made them
    // fail when a live node answered late on a loaded machine), and long before ioredis gives up
    const dlm = new Redlock(defaults, { retryCount: 0, instanceTimeout: 1000 });
    // ioredis holds the dead node's commands for 20 reconnection attempts (over 10 s), then fails them
    const probe = unanswered((defaults[2] as Redis).ping());
    const lock = await dlm.acquire("defaults:r", 2000);
    expect(await lock.release()).toBe(true);
    // ioredis had not given up yet: neither call waited for it
    expect(probe.answered).toBe(false);
    expect(await Promise.all(direct.slice(0, 2).map((client) => client.get("defaults:r")))).toEqual([null, null]);
  });

  it("with two nodes down, the failure is LockUnavailableError after the retries, not a hang", async () => {
    await server(1).kill();
    await server(2).kill();
    invariants.faultInjected();
    const defaults = clientsAtDefaults();
    const dlm = invariants.track(new Redlock(defaults, { retryCount: 2, retryDelay: 50, instanceTimeout: 100 }));
    // ioredis holds the dead nodes' commands for 20 reconnection attempts (over 10 s), then fails them
    const probes = defaults.slice(1).map((client) => unanswered(client.ping()));
    const error = await dlm.lock("defaults:r", 2000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect((error as LockUnavailableError).causes.map(({ instance }) => instance)).toEqual([1, 2]);
    // ioredis had not given up on them yet: the library's own deadlines ended the call
    expect(probes.map((probe) => probe.answered)).toEqual([false, false]);
    expect(await direct[0]?.get("defaults:r")).toBeNull();
  });
});
