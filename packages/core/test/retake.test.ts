/**
 * Retake (src/speed/retake.ts): a Redlock that releases a one-key lock and asks for the key again
 * in the same event-loop turn takes it back first, while a waiter of another Redlock (another
 * process) heads the queue, until its run of such sections is MAX_STREAK_MS old; then the key is
 * handed to that waiter. The
 * release reserves the key for the next call (sets it to that call's value), which then sends
 * nothing; a reservation that no call takes is released, which hands the key over. Each Redlock
 * here has its own hand-over channel, as a process of its own would. Commands are seen with
 * MONITOR.
 */
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { queuedOnQuorum, queueSizes } from "#test-helpers/quorum.js";
import { type Lock, type LockStore, LockUnavailableError, RedisStore, Redlock } from "../src/index.js";
import { MAX_HELD_MS, MAX_STREAK_MS } from "../src/speed/retake.js";
import { useRedlocks } from "./helpers/redlocks.js";

const redis = useRedlocks(3);

/** A poll interval so long that only a hand-over can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };
/**
 * A monotonic clock 100 times slower than real time: a section held here, however slow the
 * machine, counts as shorter than MAX_HELD_MS, so that the release may be retaken. The tests that
 * need a long section use the real clock.
 */
const SLOW_CLOCK = { clock: () => performance.now() / 100 };
/** A wait cut at 15 s: a hand-over that never comes fails the test instead of hanging it. */
const WAIT = () => ({ wait: 60_000, signal: AbortSignal.timeout(15_000) });

/**
 * Watches `clients` with MONITOR: per instance, the values a release asked it to reserve (the
 * release script's ARGV[4] in retake mode) and the values released (ARGV[1] of any other release).
 */
async function watchReservations(clients: readonly Redis[]) {
  const asked = clients.map(() => new Set<string>());
  const released = clients.map(() => new Set<string>());
  /** Every argument of the scripts each instance ran: a release of a value is seen there once it is among them. */
  const scriptArgs = clients.map(() => new Set<string>());
  const monitors = await Promise.all(clients.map((client) => client.monitor()));
  for (const [i, monitor] of monitors.entries()) {
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      // EVALSHA sha 2 key queue value mode ...: mode 'r' carries channel, reserve, hold;
      // EVALSHA sha 1 key value 'R' reserve hold: a reservation that reads no queue
      if (source === "lua" || String(args[0]).toLowerCase() !== "evalsha") return;
      for (const arg of args) scriptArgs[i]?.add(String(arg));
      if (args[5] === "R") {
        if (args[6]) asked[i]?.add(args[6]);
      } else if (args[6] === "r") {
        if (args[8]) asked[i]?.add(args[8]);
      } else if (args[5] !== undefined) released[i]?.add(args[5]);
    });
  }
  return {
    asked,
    /** Resolves once every instance ran a script with `value` (the release of a lock, `lock.value`). */
    ran: (value: string) => until(async () => scriptArgs.every((seen) => seen.has(value))),
    /** Resolves once every value asked for on `instance` was released there. */
    letGo: (instance: number) =>
      until(async () => [...(asked[instance] ?? [])].every((value) => released[instance]?.has(value))),
    stop: () => {
      for (const monitor of monitors) monitor.disconnect();
    },
  };
}

/** Resolves once `check` holds. */
async function until(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition never held");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe.each([1, 3])("retake on %i instance(s)", (count) => {
  const redlocks: Redlock[] = [];
  afterEach(async () => {
    await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  });
  const instances = () => redis.clients().slice(0, count);
  const redlock = (clock = SLOW_CLOCK) => {
    const dlm = new Redlock(instances(), { ...NO_POLLING, ...clock });
    redlocks.push(dlm);
    return dlm;
  };
  /**
   * Resolves once `n` waiters are queued on `key` on a quorum of the instances: in line there, a
   * waiter is served by the holder's release. Not on every instance: on a loaded machine a retaken
   * lock's reservation can miss one instance (its call timed out there; the lock holds the quorum),
   * and a waiter then takes the key free on that instance instead of queuing there.
   */
  const queued = (key: string, n: number) => until(async () => queuedOnQuorum(await queueSizes(instances(), key), n));

  /**
   * `a` holding `key` after a release of its own (its next release of it reserves the key for its next
   * call), listening for hand-overs since its call on `${key}:blocker`, held by `b`, queued and ended;
   * `b` waiting in line for `key`, which it can get only by a hand-over.
   */
  async function heldWithWaiter(a: Redlock, b: Redlock, key: string) {
    const blocker = await b.acquire(`${key}:blocker`, 10_000);
    const leave = new AbortController();
    const listening = a.acquire(`${key}:blocker`, 10_000, { wait: 60_000, signal: leave.signal });
    await queued(`${key}:blocker`, 1);
    await a.unlock(await a.acquire(key, 10_000));
    const lock = await a.acquire(key, 10_000, WAIT());
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    leave.abort(new Error("left"));
    await expect(listening).rejects.toThrow("left");
    return { blocker, lock, waiting };
  }

  /**
   * `a` holds `key` as a looper (its acquire followed its own release of the key in one turn), and
   * listens for hand-overs for as long as the test runs: a call of its own waits on `b`'s `blocker`
   * (`ended`: what that call settled with, once `stopAcquiring()` ended it). `options`: of a's calls of `key`.
   */
  async function looper(a: Redlock, b: Redlock, key: string, options: { fencing?: boolean } = {}) {
    const blocker = await b.acquire(`${key}:blocker`, 10_000);
    const listening = a.acquire(`${key}:blocker`, 10_000, WAIT());
    await queued(`${key}:blocker`, 1);
    const first = await a.acquire(key, 10_000, options);
    await a.unlock(first);
    const lock = await a.acquire(key, 10_000, { ...WAIT(), ...options });
    const done = async () => {
      await b.unlock(blocker);
      await a.unlock(await listening);
    };
    const ended = listening.catch((error: unknown) => error);
    return { lock, done, ended, blocker };
  }

  it("a looping Redlock takes the key back first while its run of sections is younger than MAX_STREAK_MS, then the other Redlock's waiter gets it", async () => {
    // a's clock moves only here: each section lasts half of MAX_HELD_MS on it (short enough to retake)
    let now = 0;
    const step = MAX_HELD_MS / 2;
    const last = Math.ceil(MAX_STREAK_MS / step);
    const [a, b] = [redlock({ clock: () => now }), redlock()];
    const key = `retake:${count}`;
    let { lock, done } = await looper(a, b, key);
    const holders = ["a"];
    // b heads the queue on a quorum of the instances
    const waiting = b.acquire(key, 10_000, WAIT()).then((held) => {
      holders.push("b");
      return held;
    });
    await queued(key, 1);
    // the run began when `lock` was acquired; the releases before MAX_STREAK_MS retake, the one at it does not
    let next: Promise<Lock> | undefined;
    for (let section = 1; section <= last; section++) {
      now += step;
      expect(await a.unlock(lock)).toBe(true);
      next = a.acquire(key, 10_000, WAIT());
      if (section === last) break;
      lock = await next;
      holders.push("a");
    }
    const taken = await waiting;
    expect(holders).toEqual([...Array(last).fill("a"), "b"]);
    // a's last call queued behind b, and is handed the key by b's release
    await b.unlock(taken);
    lock = await (next as Promise<Lock>);
    expect(await a.unlock(lock)).toBe(true);
    await done();
  });

  it("a looper that held the key MAX_HELD_MS or longer hands it to the other Redlock's waiter at once", async () => {
    const [a, b] = [redlock({ clock: () => performance.now() }), redlock()];
    const key = `long:${count}`;
    const { lock, done } = await looper(a, b, key);
    const holders = ["a"];
    const waiting = b.acquire(key, 10_000, WAIT()).then((held) => {
      holders.push("b");
      return held;
    });
    await queued(key, 1);
    // a long section: retaking it would keep b waiting for whole sections and gain next to nothing
    await new Promise((resolve) => setTimeout(resolve, MAX_HELD_MS + 5));
    expect(await a.unlock(lock)).toBe(true);
    const next = a.acquire(key, 10_000, WAIT()).then((held) => {
      holders.push("a");
      return held;
    });
    const taken = await waiting;
    expect(holders).toEqual(["a", "b"]);
    await b.unlock(taken);
    expect(await a.unlock(await next)).toBe(true);
    expect(holders).toEqual(["a", "b", "a"]);
    await done();
  });

  it("a retaken lock costs its release alone: the release sets the key to the next lock's value for the lock's ttl, and the next call sends nothing", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `reserve:${count}`;
    const { lock, done } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    // every command the instances run from now on, by connection, and the script's own (source "lua")
    const seen = instances().map(() => [] as string[]);
    const inScript = instances().map(() => [] as string[]);
    const monitors = await Promise.all(instances().map((c) => c.monitor()));
    for (const [i, monitor] of monitors.entries()) {
      monitor.on("monitor", (_time: string, args: string[], source: string) => {
        (source === "lua" ? inScript : seen)[i]?.push(String(args[0]).toLowerCase());
      });
    }
    expect(await a.unlock(lock)).toBe(true);
    const next = await a.acquire(key, 10_000, WAIT());
    expect(next.value).not.toBe(lock.value);
    // a quorum resolved the unlock: the last instance's release may still be on its way
    await until(async () =>
      instances().every((_, i) => seen[i]?.includes("evalsha") && (inScript[i]?.length ?? 0) >= 3),
    );
    for (const monitor of monitors) monitor.disconnect();
    // the release script alone: no SET, GET, PTTL or second script for the next lock, no PUBLISH
    expect(seen).toEqual(instances().map(() => ["evalsha"]));
    // none of a's waiters waits for this key: the script compares, deletes (its first write, so
    // that it still releases under OOM) and sets, and reads no queue
    expect(inScript).toEqual(instances().map(() => ["get", "del", "set"]));
    const held = await Promise.all(instances().map((c) => c.get(key)));
    expect(held).toEqual(instances().map(() => next.value));
    // reserved for the ttl: the lock made from it is as strong as one acquired at the release's start
    for (const ttl of await Promise.all(instances().map((c) => c.pttl(key)))) {
      expect(ttl).toBeGreaterThan(9_000);
      expect(ttl).toBeLessThanOrEqual(10_000);
    }
    expect(next.remainingMs).toBeGreaterThan(9_000);
    // b still heads the queue, told nothing
    expect(await queueSizes(instances(), key)).toEqual(instances().map(() => 1));
    expect(await a.unlock(next)).toBe(true);
    await b.unlock(await waiting);
    await done();
  });

  it("a retaken lock's validity counts from its release's start", async () => {
    let offset = 0;
    const clock = () => performance.now() / 100 + offset;
    const [a, b] = [redlock({ clock }), redlock()];
    const key = `validity:${count}`;
    const { lock, done } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    expect(await a.unlock(lock)).toBe(true);
    // 400 ms pass on a's clock between the release's start and the next call
    offset = 400;
    const next = await a.acquire(key, 10_000, WAIT());
    // the ttl from the release's start, less those 400 ms and the drift (102 ms for 10 s)
    expect(next.remainingMs).toBeLessThanOrEqual(10_000 - 400 - 102);
    expect(next.remainingMs).toBeGreaterThan(10_000 - 400 - 102 - 50);
    await a.unlock(next);
    await b.unlock(await waiting);
    await done();
  });

  it("a reservation that no call takes is released at the end of the turn, which hands the key to the waiting Redlock (no poll could wake it)", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `unused:${count}`;
    const { lock, done } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    const watch = await watchReservations(instances());
    expect(await a.unlock(lock)).toBe(true);
    const taken = await waiting;
    expect(taken.valid).toBe(true);
    // every instance was asked to reserve the next value (the last one's release may still be on
    // its way when b holds the lock), and every one had it released
    await until(async () => watch.asked.every((values) => values.size > 0));
    for (const [i, values] of watch.asked.entries()) {
      expect(values.size).toBe(1);
      await watch.letGo(i);
    }
    watch.stop();
    // b held the lock once a quorum handed it over. The last instance's reservation is let go too:
    // handed to b, or left free if its reply came after b held the lock and left that queue
    await until(async () =>
      (await Promise.all(instances().map((c) => c.get(key)))).every((v) => v === taken.value || v === null),
    );
    await b.unlock(taken);
    await done();
  });

  it("a call that cannot hold the reservation (aborted before it starts) lets the waiting Redlock have the key", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `aborted:${count}`;
    const { lock, done } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    expect(await a.unlock(lock)).toBe(true);
    await expect(
      a.acquire(key, 10_000, { ...WAIT(), signal: AbortSignal.abort(new Error("gave up")) }),
    ).rejects.toThrow("gave up");
    const taken = await waiting;
    expect(taken.valid).toBe(true);
    await b.unlock(taken);
    await done();
  });

  it.each([
    ["another ttl", { ttl: 20_000, options: {} }],
    ["fencing", { ttl: 10_000, options: { fencing: true } }],
  ])(
    "a call with %s than the reserved lock lets the reservation go at once: the waiting Redlock gets the key, the call queues behind it",
    async (_, { ttl, options }) => {
      const [a, b] = [redlock(), redlock()];
      const key = `mismatch:${count}:${ttl}:${"fencing" in options}`;
      const { lock, done } = await looper(a, b, key);
      const order: string[] = [];
      const waiting = b.acquire(key, 10_000, WAIT()).then((held) => {
        order.push("b");
        return held;
      });
      await queued(key, 1);
      expect(await a.unlock(lock)).toBe(true);
      const again = a.acquire(key, ttl, { ...WAIT(), ...options }).then((held) => {
        order.push("a");
        return held;
      });
      const taken = await waiting;
      expect(order).toEqual(["b"]);
      await b.unlock(taken);
      const mine = await again;
      expect(order).toEqual(["b", "a"]);
      expect(await a.unlock(mine)).toBe(true);
      await done();
    },
  );

  it("a call on several keys, the reserved one among them, lets the reservation go before its attempt: a try-lock takes the free keys", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `several:${count}`;
    const { lock, done } = await looper(a, b, key);
    expect(await a.unlock(lock)).toBe(true);
    // nobody else holds or waits for either key: only a's own reservation could refuse it
    const both = await a.lock([key, `${key}:other`], 10_000, { retryCount: 0 });
    expect(both).not.toBeNull();
    expect(await a.unlock(both as Lock)).toBe(true);
    // the same call while b waits for the key: b is handed it at once, the call queues behind b
    const again = await a.acquire(key, 10_000);
    await a.unlock(again);
    const looped = await a.acquire(key, 10_000);
    const order: string[] = [];
    const waiting = b.acquire(key, 10_000, WAIT()).then((held) => {
      order.push("b");
      return held;
    });
    await queued(key, 1);
    expect(await a.unlock(looped)).toBe(true);
    const mine = a.acquire([key, `${key}:other`], 10_000, WAIT()).then((held) => {
      order.push("a");
      return held;
    });
    const taken = await waiting;
    expect(order).toEqual(["b"]);
    await b.unlock(taken);
    expect(await a.unlock(await mine)).toBe(true);
    expect(order).toEqual(["b", "a"]);
    await done();
  });

  it("a call that starts while the release is still on its way (an unlock() not awaited) waits for its answer: it holds the reservation, a call on several keys lets it go first; never refused by its own Redlock", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `unawaited:${count}`;
    const looping = await looper(a, b, key);
    const watched = await watchReservations(instances());
    let lock = looping.lock;
    for (let i = 0; i < 3; i++) {
      // released in `finally` without awaiting; the next one-shot try starts at once
      const released = a.unlock(lock);
      const next = await a.lock(key, 10_000, { retryCount: 0 });
      expect(next).not.toBeNull();
      expect(await released).toBe(true);
      // the lock is the reservation's: its value is the one the release asked every instance to set
      const value = (next as Lock).value;
      await until(async () => watched.asked.every((asked) => asked.has(value)));
      lock = next as Lock;
    }
    watched.stop();
    const released = a.unlock(lock);
    const both = await a.lock([key, `${key}:other`], 10_000, { retryCount: 0 });
    expect(both).not.toBeNull();
    expect(await released).toBe(true);
    expect(await a.unlock(both as Lock)).toBe(true);
    await looping.done();
    await expect
      .poll(() => Promise.all(instances().map((c) => c.exists(key, `${key}:other`))))
      .toEqual(instances().map(() => 0));
  });

  it("a reservation made on fewer than a quorum of instances is let go: the waiting Redlock gets the key, then the call, and nothing is left", async () => {
    // a's instances: real RedisStores; all but the first ignore the reservation and hand the key over
    const inner = instances().map((client) => new RedisStore(client));
    const stores: LockStore[] = inner.map((store, i) => ({
      acquire: (keys, value, ttl, ticket) => store.acquire(keys, value, ttl, ticket),
      extend: (keys, value, ttl) => store.extend(keys, value, ttl),
      release: (keys, value, requeue) => store.release(keys, value, requeue),
      releaseOne: (key, value, channel, how) =>
        store.releaseOne(key, value, channel, i === 0 && count > 1 ? how : { grant: how.grant }),
      onHandOver: (channel, listener) => store.onHandOver(channel, listener),
      leaveQueue: (keys, value, ticket) => store.leaveQueue(keys, value, ticket),
    }));
    const a = new Redlock(stores, { ...NO_POLLING, ...SLOW_CLOCK });
    redlocks.push(a);
    const b = redlock();
    const key = `minority:${count}`;
    const { lock, done } = await looper(a, b, key);
    const order: string[] = [];
    const waiting = b.acquire(key, 10_000, WAIT()).then((held) => {
      order.push("b");
      return held;
    });
    await queued(key, 1);
    const watch = await watchReservations(instances());
    expect(await a.unlock(lock)).toBe(true);
    const again = a.acquire(key, 10_000, WAIT()).then((held) => {
      order.push("a");
      return held;
    });
    const taken = await waiting;
    expect(order).toEqual(["b"]);
    // only the first instance (of 3) was asked to reserve, and its reservation was let go
    const asked = instances().map((_, i) => (i === 0 && count > 1 ? 1 : 0));
    await until(async () => watch.asked.every((values, i) => values.size >= (asked[i] ?? 0)));
    expect(watch.asked.map((values) => values.size)).toEqual(asked);
    await watch.letGo(0);
    watch.stop();
    await b.unlock(taken);
    expect(await a.unlock(await again)).toBe(true);
    expect(order).toEqual(["b", "a"]);
    // nothing is left under the key once both released
    await until(async () => (await Promise.all(instances().map((c) => c.get(key)))).every((v) => v === null));
    await done();
    for (const store of inner) store.close();
  });

  it("quit() right after a release lets the reservation go before the connections close: the waiting Redlock gets the key", async () => {
    // a creates and owns its clients, which quit() closes
    const ports = Array.from({ length: count }, (_, i) => redis.server(i).port);
    const a = new Redlock(
      ports.map((port) => ({ host: "127.0.0.1", port })),
      { ...NO_POLLING, ...SLOW_CLOCK },
    );
    const b = redlock();
    const { blocker, lock, waiting } = await heldWithWaiter(a, b, `quit:${count}`);
    expect(await a.unlock(lock)).toBe(true);
    await a.quit();
    // without the let-go the key would stay reserved for 10 s, and b, which does not poll, would time out
    const taken = await waiting;
    expect(taken.valid).toBe(true);
    await b.unlock(taken);
    await b.unlock(blocker);
  });

  it("a looper's release after stopAcquiring() reserves nothing (no call of its Redlock will come): the key goes to the other Redlock's waiter", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `stopped:${count}`;
    const { lock, ended, blocker } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    const watch = await watchReservations(instances());
    try {
      await a.stopAcquiring();
      expect(await ended).toBeInstanceOf(LockUnavailableError);
      expect(await a.unlock(lock)).toBe(true);
      const taken = await waiting;
      await watch.ran(lock.value);
      expect(watch.asked).toEqual(instances().map(() => new Set()));
      await b.unlock(taken);
    } finally {
      watch.stop();
    }
    await b.unlock(blocker);
  });

  it.each([
    ["stopAcquiring()", false],
    ["quit()", true],
  ])(
    "%s while a call waits for the answer of a release still on its way resolves after that call rejected; the reservation is let go",
    async (stop, quit) => {
      const a = new Redlock(instances(), { ...NO_POLLING, ...SLOW_CLOCK });
      if (!quit) redlocks.push(a);
      const b = redlock();
      const key = `settling:${quit}:${count}`;
      // no other call of a runs: its call on the blocker has ended
      const { blocker, lock, waiting } = await heldWithWaiter(a, b, key);
      const order: string[] = [];
      // not awaited: the release reserves the key, and the call waits for its answer (Retake.settling)
      const released = a.unlock(lock);
      const call = a.acquire(key, 10_000, WAIT()).then(
        () => order.push("acquired"),
        (error: unknown) => order.push(error instanceof LockUnavailableError ? "LockUnavailableError" : String(error)),
      );
      await (quit ? a.quit() : a.stopAcquiring());
      order.push(`${stop} resolved`);
      await call;
      expect(order).toEqual(["LockUnavailableError", `${stop} resolved`]);
      expect(await released).toBe(true);
      // without the let-go the key would stay reserved for 10 s, and b, which does not poll, would time out
      await b.unlock(await waiting);
      await b.unlock(blocker);
      await until(async () =>
        (await Promise.all(instances().map((c) => c.keys(`${key}*`)))).every((k) => k.length === 0),
      );
    },
  );

  it("a fenced looper's release reserves nothing (no fenced call could hold it): the next fenced call lets nothing go", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `fenced-looper:${count}`;
    const { lock, done } = await looper(a, b, key, { fencing: true });
    expect(lock.fence).toBeDefined();
    const watch = await watchReservations(instances());
    try {
      expect(await a.unlock(lock)).toBe(true);
      const next = await a.acquire(key, 10_000, { ...WAIT(), fencing: true });
      expect(BigInt(next.fence as string)).toBeGreaterThan(BigInt(lock.fence as string));
      await watch.ran(lock.value);
      // the release compared and deleted the key: no instance was asked to reserve it
      expect(watch.asked).toEqual(instances().map(() => new Set()));
      expect(await a.unlock(next)).toBe(true);
    } finally {
      watch.stop();
    }
    await done();
  });

  /**
   * Holds every instance's writes back (CLIENT PAUSE WRITE, sent on connections of the test's own:
   * the paused ones are shared by every Redlock here) until `unpause()`.
   */
  async function pauseWrites() {
    const admins = instances().map((_, i) => redis.server(i).client());
    await Promise.all(admins.map((admin) => admin.call("CLIENT", "PAUSE", 60_000, "WRITE")));
    return {
      /** Resolves once a command waits on every instance. */
      blocked: () =>
        until(async () =>
          (await Promise.all(admins.map((admin) => admin.info("clients")))).every((info) =>
            /blocked_clients:1\b/.test(info),
          ),
        ),
      /** Lets the instances run the held-back writes (again after the test, whatever failed). */
      unpause: async () => {
        if (admins.length === 0) return;
        await Promise.all(admins.map((admin) => admin.call("CLIENT", "UNPAUSE")));
        for (const admin of admins.splice(0)) admin.disconnect();
      },
    };
  }

  /** A Redlock whose attempts wait for an answer rather than time out while the instances are paused. */
  const patient = () => {
    const dlm = new Redlock(instances(), { ...NO_POLLING, ...SLOW_CLOCK, instanceTimeout: 5000 });
    redlocks.push(dlm);
    return dlm;
  };

  it("a looper's release while stopAcquiring() still waits for an attempt in flight reserves nothing either", async () => {
    const [a, b] = [patient(), redlock()];
    const key = `stopping:${count}`;
    const { lock, ended, blocker } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    const watch = await watchReservations(instances());
    const paused = await pauseWrites();
    try {
      const inFlight = a.acquire(`${key}:in-flight`, 10_000, { retryCount: 0 }).catch((error: unknown) => error);
      await paused.blocked();
      // stopAcquiring() waits for that attempt's answer; the release comes meanwhile
      const stopping = a.stopAcquiring();
      const released = a.unlock(lock);
      await paused.unpause();
      expect(await inFlight).toBeInstanceOf(LockUnavailableError);
      expect(await ended).toBeInstanceOf(LockUnavailableError);
      expect(await released).toBe(true);
      await stopping;
      await watch.ran(lock.value);
      expect(watch.asked).toEqual(instances().map(() => new Set()));
      await b.unlock(await waiting);
    } finally {
      watch.stop();
      await paused.unpause();
    }
    await b.unlock(blocker);
  });

  // a fenced waiter is never granted the key by a release: it is handed over by message, so the
  // release must read the queue even though no grant is offered
  it.each([
    ["a waiter", false],
    ["a fenced waiter", true],
  ])("%s of the releasing Redlock itself is handed the key before that Redlock's new call", async (_, fencing) => {
    const [a, b] = [redlock(), redlock()];
    const key = `own:${fencing}:${count}`;
    const { lock, done } = await looper(a, b, key);
    const order: string[] = [];
    const own = a.acquire(key, 10_000, { ...WAIT(), fencing }).then((held) => {
      order.push("own waiter");
      return held;
    });
    await queued(key, 1);
    expect(await a.unlock(lock)).toBe(true);
    const again = a.acquire(key, 10_000, WAIT()).then((held) => {
      order.push("new call");
      return held;
    });
    const first = await own;
    expect(first.fence !== undefined).toBe(fencing);
    await a.unlock(first);
    await a.unlock(await again);
    expect(order).toEqual(["own waiter", "new call"]);
    await done();
  });
});
