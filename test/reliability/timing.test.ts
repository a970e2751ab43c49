/**
 * Timing (docs/reliability.md T1–T13): validity arithmetic against an injected monotonic clock, slow and
 * frozen acquisitions, wall-clock jumps, auto-extension keeping and losing a lock, the extension
 * cap, and an event loop frozen past the ttl.
 */
import diagnosticsChannel from "node:diagnostics_channel";
import {
  type ExtendMessage,
  LockLostError,
  type LockStore,
  LockUnavailableError,
  MemoryStore,
  RedisStore,
  Redlock,
} from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { aborted } from "../helpers/aborted.js";
import { startDelayProxy } from "../helpers/delay-proxy.js";
import { useInvariants } from "../helpers/invariants.js";
import { arrival, nextExtensions } from "../helpers/lock-events.js";
import { scriptOf, sentByClientsWith, startMonitors } from "../helpers/monitor.js";
import { heldByQuorum } from "../helpers/quorum.js";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";
import { turnClock } from "../helpers/turn-clock.js";
import { warmUp } from "../helpers/warm-up.js";

const cluster = useRedisServers(3);
const invariants = useInvariants(cluster, { maxTtlMs: 2000 });
let direct: Redis[] = [];

beforeAll(async () => {
  direct = cluster.servers.map((server) => server.client());
  // every answer awaited up to 1 s, retried, and the Redlock quit: a 1 s lock's 100 ms bound, which
  // a loaded machine's Redis misses, failed the whole file here
  await warmUp(new Redlock(direct), { quit: true });
});

afterEach(() => {
  vi.restoreAllMocks();
});

/**
 * The per-instance bound of a 1 s lock taken where a test is not about that bound: its default (a
 * tenth of the ttl, 100 ms) is missed by a loaded machine's Redis, and the call then fails
 * unavailable. Half the ttl, as the default is never more than half. Validity is unchanged (ttl −
 * elapsed − drift), and so are the renewal margins (half the ttl).
 */
const BOUND = 500;

const server = (i: number) => cluster.servers[i] as RedisServer;
const valuesOf = (key: string) => Promise.all(direct.map((client) => client.get(key)));
const drift = (ttl: number) => Math.floor(ttl * 0.01) + 2;

function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // a synchronous stretch: GC pause, CPU-bound work, a blocked event loop
  }
}

/** A fake monotonic clock that moves only when the store in front of node 0 is called. */
function injectedClock() {
  const clock = { now: 1_000_000, read: () => clock.now };
  return clock;
}

/** Node 0's real RedisStore (or the store given), with hooks around each call (the clock is advanced there). */
function hooked(
  client: Redis | LockStore,
  hooks: { acquire?: (call: number) => void | Promise<void>; afterAcquire?: (call: number) => Promise<void> },
  onExtend?: (ttl: number) => void,
): LockStore {
  const inner = "acquire" in client ? client : new RedisStore(client);
  let calls = 0;
  return {
    async acquire(keys, value, ttl) {
      const call = ++calls;
      await hooks.acquire?.(call);
      const reply = await inner.acquire(keys, value, ttl);
      await hooks.afterAcquire?.(call);
      return reply;
    },
    extend(keys, value, ttl) {
      onExtend?.(ttl);
      return inner.extend(keys, value, ttl);
    },
    release: (keys, value) => inner.release(keys, value),
  };
}

describe("a lock never released (T1)", () => {
  it("its keys outlive its validity on every instance, by at most the ttl, and expire: another client gets it only once the validity has ended", async () => {
    const dlm = new Redlock(direct);
    // 150 ms per instance (half the ttl), not the default 50 ms a loaded machine's Redis misses
    const lock = await dlm.acquire("expiry:never-released", 300, { instanceTimeout: 150 });
    // PTTL read first, the validity after: the keys last longer than the holder believes it holds them
    const pttls = await Promise.all(direct.map((client) => client.pttl("expiry:never-released")));
    const remaining = lock.remainingMs;
    for (const pttl of pttls) {
      expect(pttl).toBeLessThanOrEqual(300);
      expect(pttl).toBeGreaterThan(remaining);
    }
    // a waiter polls until the keys have expired by themselves
    const other = new Redlock(direct);
    const next = await other.acquire("expiry:never-released", 1000, {
      wait: 5000,
      retryDelay: 20,
      retryJitter: 10,
      instanceTimeout: BOUND,
    });
    expect(lock.valid).toBe(false);
    expect(lock.remainingMs).toBe(0);
    // the waiter's lock on a quorum, nobody else's anywhere: a poll can reach the instances just as
    // the keys expire and find one still there (its SET landed a moment later), and the lock then
    // holds on the other two while that key expires
    await expect.poll(async () => heldByQuorum(await valuesOf("expiry:never-released"), next.value)).toBe(true);
    expect(await lock.release()).toBe(false);
    await next.release();
    await other.quit();
    await dlm.quit();
  });
});

describe("validity arithmetic against an injected clock", () => {
  // [ttl, ms an acquire takes, ms an extension takes] (a 10 ms lock leaves room for little)
  it.each([
    [10, 3, 1],
    [100, 37, 11],
    // ⌊1.99⌋ + 2 = 3 ms of drift: rounding (Math.round, as node-redlock does) would give 4
    [199, 37, 11],
    [1000, 37, 11],
    [30_000, 37, 11],
  ])(
    "ttl %i: validity = ttl − elapsed − (⌊ttl × 0.01⌋ + 2), for acquire and extend",
    async (ttl, acquireMs, extendMs) => {
      const clock = injectedClock();
      // In-process stores whose keys expire on the injected clock: on Redis, a 10 ms lock's keys
      // expire after 10 real ms and its per-instance bound is 5 real ms, so the extension below
      // failed beside a busy test file ('could not be extended on a quorum (1 of 3 instances…').
      // What is tested is Redlock's arithmetic, which no real time may enter.
      const [first, ...others] = [0, 1, 2].map(() => new MemoryStore(clock.read)) as [MemoryStore, ...MemoryStore[]];
      const store = hooked(
        first,
        {
          acquire: () => {
            clock.now += acquireMs;
          },
        },
        () => {
          clock.now += extendMs;
        },
      );
      const dlm = new Redlock([store, ...others], {
        clock: clock.read,
        retryCount: 0,
        instanceTimeout: Math.min(Math.floor(ttl / 2), 1000),
      });
      const lock = await dlm.acquire(`arith:${ttl}`, ttl);
      expect(lock.remainingMs).toBe(ttl - acquireMs - drift(ttl));
      clock.now += 1;
      expect(lock.remainingMs).toBe(ttl - acquireMs - 1 - drift(ttl));
      await dlm.extend(lock, ttl);
      expect(lock.remainingMs).toBe(ttl - extendMs - drift(ttl));
      clock.now += ttl;
      expect(lock.valid).toBe(false);
      expect(lock.remainingMs).toBe(0);
      await lock.release();
    },
  );

  it("is measured from the start of the successful attempt, not the first one", async () => {
    const clock = injectedClock();
    const clogged = [direct[1] as Redis, direct[2] as Redis];
    await Promise.all(clogged.map((client) => client.set("arith:retry", "other", "PX", 5000)));
    const store = hooked(direct[0] as Redis, {
      acquire: async (call) => {
        clock.now += call < 3 ? 100 : 7;
        // The other holder leaves just before the third attempt: these DELs are issued before that
        // attempt's commands on the same connections, so the first two attempts are refused for sure.
        if (call === 3) await Promise.all(clogged.map((client) => client.del("arith:retry")));
      },
    });
    // tracked: a Redlock that waited holds release-notification connections until quit()
    const dlm = invariants.track(
      new Redlock([store, ...clogged], { clock: clock.read, retryCount: 5, retryDelay: 10, instanceTimeout: BOUND }),
    );
    const lock = await dlm.acquire("arith:retry", 1000);
    expect(lock.remainingMs).toBe(1000 - 7 - drift(1000));
    await lock.release();
  });

  it("a clock wall-jumping by ±1 h (Date.now) changes nothing: validity is monotonic time only", async () => {
    const clock = injectedClock();
    const store = hooked(
      direct[0] as Redis,
      {
        acquire: () => {
          clock.now += 50;
        },
      },
      () => {
        clock.now += 20;
      },
    );
    const realNow = Date.now.bind(Date);
    let calls = 0;
    vi.spyOn(Date, "now").mockImplementation(() => realNow() + (calls++ % 2 === 0 ? 3_600_000 : -3_600_000));
    const dlm = new Redlock([store, direct[1] as Redis, direct[2] as Redis], {
      clock: clock.read,
      retryCount: 0,
      instanceTimeout: BOUND,
    });
    const lock = await dlm.acquire("jump:injected", 1000);
    expect(lock.remainingMs).toBe(1000 - 50 - drift(1000));
    await dlm.extend(lock, 1000);
    expect(lock.remainingMs).toBe(1000 - 20 - drift(1000));
    expect(calls).toBeGreaterThan(0);
    vi.restoreAllMocks();
    await lock.release();
  });

  it("with the default clock, wall-clock jumps neither shorten nor stretch a lock", async () => {
    const realNow = Date.now.bind(Date);
    let calls = 0;
    vi.spyOn(Date, "now").mockImplementation(() => realNow() + (calls++ % 2 === 0 ? 3_600_000 : -3_600_000));
    const dlm = new Redlock(direct, { retryCount: 0 });
    // ttls a loaded machine cannot outlast between these steps: only a jump could end the lock here
    const lock = await dlm.acquire("jump:real", 10_000);
    const signal = lock.signal;
    expect(lock.valid).toBe(true);
    expect(lock.remainingMs).toBeGreaterThan(0);
    expect(lock.remainingMs).toBeLessThanOrEqual(10_000 - drift(10_000));
    // not a wait for time to pass: a validity timer armed from a jumped clock is due at once, so it
    // fires before this later one (timers run in the order they fall due)
    await sleep(50);
    expect(signal.aborted).toBe(false);
    await dlm.extend(lock, 20_000);
    expect(lock.remainingMs).toBeLessThanOrEqual(20_000 - drift(20_000));
    expect(lock.remainingMs).toBeGreaterThan(10_000);
    expect(calls).toBeGreaterThan(0);
    vi.restoreAllMocks();
    expect(await lock.release()).toBe(true);
  });
});

describe("the validity threshold: held only with validity left after the drift (T2)", () => {
  // ttl 1000: drift 12, so the last acquisition that counts takes 987 ms and leaves 1 ms
  const ttl = 1000;
  const lastMs = ttl - drift(ttl) - 1;

  /** Node 0's RedisStore; the injected clock moves by `fencedMs` when its fence write-back is sent. */
  class WriteBackTakes extends RedisStore {
    constructor(
      client: Redis,
      readonly clock: { now: number },
      readonly fencedMs: number,
    ) {
      super(client);
    }

    override raiseFences(keys: readonly string[], value: string, fences: readonly string[]) {
      this.clock.now += this.fencedMs;
      return super.raiseFences(keys, value, fences);
    }
  }

  it.each([
    ["1 ms left: held, valid for that 1 ms", lastMs, 1],
    ["0 ms left: refused, released everywhere", lastMs + 1, 0],
  ])("an acquisition with %s", async (_, elapsedMs, left) => {
    const clock = injectedClock();
    const store = hooked(direct[0] as Redis, {
      acquire: () => {
        clock.now += elapsedMs;
      },
    });
    const dlm = new Redlock([store, direct[1] as Redis, direct[2] as Redis], {
      clock: clock.read,
      retryCount: 0,
      instanceTimeout: BOUND,
    });
    const outcome = await dlm.acquire("threshold:acquire", ttl).catch((e: unknown) => e);
    if (left > 0) {
      expect(outcome).toMatchObject({ valid: true, remainingMs: left });
      clock.now += left;
      expect((outcome as { valid: boolean }).valid).toBe(false);
      await (outcome as { release(): Promise<boolean> }).release();
    } else {
      expect(outcome).toBeInstanceOf(LockUnavailableError);
      expect((outcome as Error).message).toMatch(/no validity left/);
    }
    await expect.poll(() => valuesOf("threshold:acquire")).toEqual([null, null, null]);
  });

  it.each([
    ["1 ms left: held, valid for that 1 ms", lastMs, 1],
    ["0 ms left: refused, released everywhere", lastMs + 1, 0],
  ])("a fenced acquisition whose write-back leaves %s", async (_, elapsedMs, left) => {
    const clock = injectedClock();
    const store = new WriteBackTakes(direct[0] as Redis, clock, elapsedMs);
    const dlm = new Redlock([store, direct[1] as Redis, direct[2] as Redis], {
      clock: clock.read,
      retryCount: 0,
      fencing: true,
      instanceTimeout: BOUND,
    });
    const outcome = await dlm.acquire("threshold:fenced", ttl).catch((e: unknown) => e);
    if (left > 0) {
      expect(outcome).toMatchObject({ valid: true, remainingMs: left });
      await (outcome as { release(): Promise<boolean> }).release();
    } else {
      // the write-back's time counts: phase 1 alone left the whole ttl
      expect(outcome).toBeInstanceOf(LockUnavailableError);
      expect((outcome as Error).message).toMatch(/no validity left/);
    }
    await expect.poll(() => valuesOf("threshold:fenced")).toEqual([null, null, null]);
    await Promise.all(direct.map((client) => client.del("threshold:fenced:redlock-kit:fence")));
  });

  it.each([
    ["1 ms left: extended, valid for that 1 ms", lastMs, 1],
    ["0 ms left: the lock is lost, its signal aborted", lastMs + 1, 0],
  ])("an extension confirmed by every instance with %s", async (_, elapsedMs, left) => {
    const clock = injectedClock();
    const store = hooked(direct[0] as Redis, {}, () => {
      clock.now += elapsedMs;
    });
    const dlm = new Redlock([store, direct[1] as Redis, direct[2] as Redis], { clock: clock.read, retryCount: 0 });
    // a 30 s lock: still valid when the extension's replies come, so only the extension's own time decides
    const lock = await dlm.acquire("threshold:extend", 30_000);
    const signal = lock.signal;
    const outcome = await dlm.extend(lock, ttl).catch((e: unknown) => e);
    if (left > 0) {
      expect(outcome).toBe(lock);
      expect(lock.remainingMs).toBe(left);
      expect(signal.aborted).toBe(false);
    } else {
      expect(outcome).toBeInstanceOf(LockLostError);
      expect((outcome as Error).message).toMatch(/no validity left/);
      expect(lock.valid).toBe(false);
      await aborted(signal);
      expect(signal.reason).toBe(outcome);
    }
    // the keys are still ours until Redis expires them: the release deletes them
    expect(await lock.release()).toBe(true);
    expect(await valuesOf("threshold:extend")).toEqual([null, null, null]);
  });
});

describe("an acquisition slower than the ttl fails", () => {
  it("when the quorum answered but the elapsed time used up the ttl: unavailable, released everywhere", async () => {
    const clock = injectedClock();
    const store = hooked(direct[0] as Redis, {
      acquire: () => {
        clock.now += 1000;
      },
    });
    const dlm = new Redlock([store, direct[1] as Redis, direct[2] as Redis], {
      clock: clock.read,
      retryCount: 0,
      instanceTimeout: BOUND,
    });
    const error = await dlm.lock("slow:validity", 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect((error as Error).message).toMatch(/no validity left/);
    await expect.poll(() => valuesOf("slow:validity")).toEqual([null, null, null]);
  });

  it("through a 150 ms proxy with a 200 ms ttl: never acquired, and the late SETs are released behind", async () => {
    const clients: Redis[] = [];
    for (const target of cluster.servers) {
      const proxy = invariants.track(await startDelayProxy(target.port, { upDelayMs: 150, downDelayMs: 150 }));
      clients.push(invariants.track(target.client({ port: proxy.port })));
    }
    await Promise.all(clients.map((client) => client.ping()));
    const dlm = invariants.track(new Redlock(clients, { retryCount: 1, retryDelay: 10 }));
    const error = await dlm.lock("slow:proxy", 200).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    // wait for the proxies to deliver everything: SETs, then the releases queued behind them
    await Promise.all(clients.map((client) => client.ping()));
    await expect.poll(() => valuesOf("slow:proxy")).toEqual([null, null, null]);
  });

  it("when the event loop freezes for longer than the ttl while the replies are in flight: the validity check refuses it", async () => {
    const dlm = new Redlock(direct, { retryCount: 0 });
    // From a setImmediate callback, the loop's next stops are timers (the 50 ms per-instance
    // deadline, due during the freeze) and only then the poll for the replies: the order in which
    // a timeout would win if the library did not let replies that already arrived count first.
    const { pending } = await new Promise<{ pending: Promise<unknown> }>((resolve) =>
      setImmediate(() => {
        const pending = dlm.lock("slow:frozen", 200).catch((e: unknown) => e);
        // five ttls: long enough for every server to have answered meanwhile, even on a loaded machine
        busyWait(1000);
        resolve({ pending });
      }),
    );
    const error = await pending;
    expect(error).toBeInstanceOf(LockUnavailableError);
    // a quorum answered yes (their replies waited in the socket buffers): not the per-instance
    // timeout, which fell due during the freeze too, but the elapsed time refused the lock
    const causes = (error as LockUnavailableError).causes.map((cause) => cause.error.message);
    expect(causes.filter((message) => message.startsWith("No answer within"))).toEqual([]);
    expect((error as Error).message).toMatch(/no validity left/);
    await expect.poll(() => valuesOf("slow:frozen")).toEqual([null, null, null]);
  });
});

describe("auto-extension", () => {
  it("keeps the lock: a quorum holds our value with a ttl at every sample through 3 renewals, past its ttl", async () => {
    const extensions: ExtendMessage[] = [];
    const onExtend = (message: unknown) => {
      if ((message as ExtendMessage).resources.includes("auto:keep")) extensions.push(message as ExtendMessage);
    };
    diagnosticsChannel.subscribe("redlock-kit:extend", onExtend);
    try {
      const dlm = new Redlock(direct);
      // 2 s: renewed at half of it, so a renewal the loaded machine runs up to ~1 s late still comes
      // in time; the section lasts until the third renewal (~3 s), whenever that comes
      const ttl = 2000;
      const { samples, heldMs } = await dlm.using("auto:keep", ttl, async (signal, lock) => {
        const started = performance.now();
        const renewed = nextExtensions("auto:keep", 3);
        // how many instances hold our value with a ttl, and after how many renewals
        const seen: { renewals: number; holding: number }[] = [];
        let sampling = true;
        const sampled = (async () => {
          while (sampling) {
            const renewals = extensions.length;
            const held = await Promise.all(
              direct.map(
                async (client) =>
                  (await client.get("auto:keep")) === lock.value && (await client.pttl("auto:keep")) > 0,
              ),
            );
            seen.push({ renewals, holding: held.filter(Boolean).length });
            await sleep(25);
          }
        })();
        try {
          // a lock left unrenewed fails here as "its 3 renewals never came"
          await arrival(renewed, "its 3 renewals");
        } finally {
          sampling = false;
          await sampled;
        }
        expect(signal.aborted).toBe(false);
        expect(lock.valid).toBe(true);
        return { samples: seen, heldMs: performance.now() - started };
      });
      // sampled before the first renewal and between each two (each ~1 s apart)
      expect([...new Set(samples.map((sample) => sample.renewals))]).toEqual(expect.arrayContaining([0, 1, 2]));
      expect(Math.min(...samples.map((sample) => sample.holding))).toBeGreaterThanOrEqual(2);
      expect(extensions.every((m) => m.extended)).toBe(true);
      // held past its ttl, which renewals half a ttl apart take (late ones only make it longer): a
      // storm of renewals back to back would have made three long before
      expect(heldMs).toBeGreaterThan(ttl);
      await expect.poll(() => valuesOf("auto:keep")).toEqual([null, null, null]);
    } finally {
      diagnosticsChannel.unsubscribe("redlock-kit:extend", onExtend);
    }
  });

  it("loses the lock when a majority stops answering: the signal aborts before the validity ends", async () => {
    // 300 ms per instance: 100 ms failed the acquisition when a loaded machine's Redis answered later
    // (unavailable); the failed renewal still reports the loss ahead of the validity's end
    const dlm = new Redlock(direct, { instanceTimeout: 300 });
    let reason: unknown;
    await dlm.using("auto:lose", 1000, async (signal, lock) => {
      server(1).pause();
      server(2).pause();
      // no extension can succeed from here on
      await aborted(signal);
      reason = signal.reason;
      expect(lock.valid).toBe(false);
    });
    // the renewal's report, which it gives ahead of the validity's end (its timer is due earlier,
    // so a late event loop keeps the order), not the validity timer's "Lock validity ended before
    // it was extended or released"; before, this compared two measured times
    expect(reason).toEqual(new LockLostError(["auto:lose"], "Lock could not be extended before its validity ended"));
    server(1).resume();
    server(2).resume();
    // the failed extension and the release reached the stopped nodes late, in that order
    await Promise.all(direct.map((client) => client.ping()));
    await expect.poll(() => valuesOf("auto:lose")).toEqual([null, null, null]);
  });

  it("stops at maxHoldMs: a holder that never returns blocks others only until then, and knows it lost the lock", async () => {
    // a 2 s ttl renewed at half of it (a renewal up to ~1 s late still comes in time) and a cap the
    // one renewal reaches: the key outlives its ttl only by that renewal, and ends at the cap
    const ttl = 2000;
    const maxHoldMs = 2200;
    // every extension the holder sends: for how long, and a time no later than the clock reading
    // the library computed that ttl from (the same turn of the event loop)
    const requests: { from: number; ttl: number }[] = [];
    const { clock, firstReadThisTurn } = turnClock();
    const stores = direct.map((client) =>
      hooked(client, {}, (ttl) => {
        requests.push({ from: firstReadThisTurn() ?? Number.NaN, ttl });
      }),
    );
    const holder = new Redlock(stores, { clock });
    const other = invariants.track(new Redlock(direct));
    let sectionStart = 0;
    let holderLock: { valid: boolean } | undefined;
    let entered: () => void = () => {};
    const inSection = new Promise<void>((resolve) => {
      entered = resolve;
    });
    // before the lock and its cap: the cap ends at usingCalled + maxHoldMs at the earliest
    const usingCalled = performance.now();
    const holding = holder.using(
      "auto:cap",
      ttl,
      async (signal, lock) => {
        // read after the cap was set: the cap ends at sectionStart + maxHoldMs at the latest
        sectionStart = performance.now();
        holderLock = lock;
        entered();
        await aborted(signal);
        return signal.reason;
      },
      { maxHoldMs },
    );
    await inSection;
    // a wait no loaded machine outlasts before the cap (a holder past the cap fails as contention)
    const next = await other.acquire("auto:cap", 2000, { wait: 15_000, retryDelay: 20, retryJitter: 10 });
    // the key outlived its ttl, up to the cap (less the drift, at most 22 ms, its last validity
    // lost; a slow machine only makes this later)...
    expect(performance.now() - usingCalled).toBeGreaterThanOrEqual(maxHoldMs - 50);
    expect(requests.length).toBeGreaterThanOrEqual(3);
    // ...and no extension asked for an expiry past the cap: counted from a time no later than the
    // library's reading, and to a cap no earlier than its own, whatever pause came in between
    const latestEnd = Math.max(...requests.map(({ from, ttl }) => from + ttl));
    expect(latestEnd).toBeLessThanOrEqual(sectionStart + maxHoldMs);
    expect(holderLock?.valid).toBe(false);
    expect(await holding).toBeInstanceOf(LockLostError);
    // the waiter holds a quorum: where the holder's release found its key already expired nothing
    // was handed over, and a lock granted by the hand-overs (docs/waiting.md, "Grant by message")
    // takes no free instance; no instance holds anything else
    await expect.poll(async () => heldByQuorum(await valuesOf("auto:cap"), next.value)).toBe(true);
    expect(await next.release()).toBe(true);
    await expect.poll(() => valuesOf("auto:cap")).toEqual([null, null, null]);
  });
});

describe("an event loop frozen longer than the ttl", () => {
  it("leaves the lock invalid, its signal aborted, and release says it was no longer held", async () => {
    const dlm = new Redlock(direct, { retryCount: 0 });
    // a ttl a loaded machine's acquisition does not use up (200 ms did: "no validity left")
    const lock = await dlm.acquire("freeze:lock", 1000, { instanceTimeout: BOUND });
    const signal = lock.signal;
    busyWait(1250);
    expect(lock.valid).toBe(false);
    expect(lock.remainingMs).toBe(0);
    await sleep(0);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(LockLostError);
    expect(await lock.release()).toBe(false);
  });

  it("inside using(): the section sees the loss, no extension resurrects it, and another client takes it while the section runs", async () => {
    // 150 ms per instance (the renewal margin stays half the ttl), not the default 50 ms a loaded
    // machine's Redis misses
    const dlm = new Redlock(direct, { instanceTimeout: 150 });
    const other = new Redlock(direct, { retryCount: 0 });
    const monitors = await startMonitors(cluster.servers, invariants);
    let value = "";
    const seen = await dlm.using("freeze:using", 200, async (signal, lock) => {
      value = lock.value;
      busyWait(450);
      // the abort itself, not a turn of the event loop: when the acquisition left less than the
      // renewal margin (a slow Redis), the renewal fell due at once and a sleep(0) could read the
      // signal before the validity timer had fired ({ valid: false, aborted: false })
      await aborted(signal);
      const loss = { valid: lock.valid, aborted: signal.aborted, reason: signal.reason as Error };
      // the renewal was due during the freeze: give it another ttl to (wrongly) bring the key back
      await sleep(200);
      const before = await valuesOf("freeze:using");
      // another client takes the key while this section still runs, and keeps it through the
      // holder's renewal schedule and its release (a ttl no late timer outlasts before the check)
      const next = await other.acquire("freeze:using", 10_000);
      await sleep(200);
      return { ...loss, before, next };
    });
    expect(seen).toMatchObject({ valid: false, aborted: true, before: [null, null, null] });
    // the validity timer aborted the signal: no extension was tried and failed
    expect(seen.reason).toBeInstanceOf(LockLostError);
    expect(seen.reason.message).toMatch(/validity ended/);
    expect(await valuesOf("freeze:using")).toEqual([seen.next.value, seen.next.value, seen.next.value]);
    for (const monitor of monitors) {
      await monitor.caughtUp();
      // the renewal saw the loss before sending anything: our value went out to acquire and release only
      const ours = sentByClientsWith(monitor.seen, value).map(scriptOf);
      expect(ours).toEqual(["acquire", "release"]);
    }
    await seen.next.release();
  });
});
