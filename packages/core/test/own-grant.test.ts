/**
 * The own-waiter grant (src/speed/own-grant.ts): a release whose key's queue is headed by a waiter
 * of the same Redlock gives that waiter the key outright (its value, its ttl), and the waiter holds
 * the lock from the release's reply: no message, no claim. Counted with INFO commandstats (every
 * script call, and every PUBLISH a script makes, is counted).
 */
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { heldByQuorum, queueSizes } from "#test-helpers/quorum.js";
import { type Lock, MemoryStore, type QueueTicket, RedisStore, Redlock } from "../src/index.js";
import { DEFAULT_ACQUIRE, driftFor, resolveAcquireOptions } from "../src/options.js";
import type { Vote } from "../src/quorum/ballot.js";
import type { AcquireReply } from "../src/stores/store.js";
import { HandOvers, type Waiter } from "../src/waiting/hand-over.js";
import { WaitingCall } from "../src/waiting/waiting-call.js";
import { useRedlocks } from "./helpers/redlocks.js";

const redis = useRedlocks(3);

/** A poll interval so long that only a hand-over or a grant can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };
/** A wait cut at 15 s: a grant that never comes fails the test instead of hanging it. */
const WAIT = () => ({ wait: 60_000, signal: AbortSignal.timeout(15_000) });

/** Script calls and PUBLISHes an instance has run so far. */
async function counts(client: Redis): Promise<{ scripts: number; publishes: number }> {
  const info = await client.info("commandstats");
  const calls = (command: string) => Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
  return { scripts: calls("evalsha") + calls("eval"), publishes: calls("publish") };
}

/** Resolves once `check` holds. */
async function until(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition never held");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe("own-waiter grant: which replies count", () => {
  it("a grant holds only if the waiter sent no attempt after the release; otherwise it is a hand-over", () => {
    const handOvers = new HandOvers([new RedisStore(redis.client(0))], 1);
    const stale = handOvers.enter(["k1"], "v1", 10_000, 50, 60_000, true);
    const attempts = stale.attempts;
    // the waiter's own poll sent an attempt after the release that granted it the key
    stale.attempts++;
    handOvers.granted(0, "k1", stale, 5, attempts);
    expect(stale.grantedAt).toBeUndefined();
    expect(stale.holding.has(0)).toBe(true);
    const fresh = handOvers.enter(["k2"], "v2", 10_000, 50, 60_000, true);
    handOvers.granted(0, "k2", fresh, 5, fresh.attempts);
    expect(fresh.grantedAt).toBe(5);
    handOvers.close();
  });

  it("a grant by a release sent before the waiter gave keys back is only a hand-over", async () => {
    const store = new RedisStore(redis.client(0));
    const handOvers = new HandOvers([store], 1);
    await handOvers.listen(1000);
    const opts = resolveAcquireOptions(DEFAULT_ACQUIRE, { wait: 60_000 });
    const grantTo = (key: string, giveBack: boolean) => {
      const call = new WaitingCall(
        handOvers,
        [store],
        1,
        { keys: [key], value: `${key}-v`, ttl: 10_000 },
        50,
        opts,
        true,
      );
      expect(call.ticket(0)).toBeDefined();
      const waiter = handOvers.grantable(key) as Waiter;
      const attempts = waiter.attempts; // the release is sent now, after the attempt
      // the attempt timed out on the instance: the waiter gives back what it may have taken there,
      // on the same connection, after the release
      const vote: Vote<AcquireReply> = giveBack
        ? { ok: false, error: new Error("No answer within 50 ms") }
        : { ok: true, value: { acquired: false, holderTtl: 100 } };
      call.settled([vote], false, true);
      handOvers.granted(0, key, waiter, 5, attempts);
      return waiter;
    };
    const givenBack = grantTo("k3", true);
    expect(givenBack.grantedAt).toBeUndefined();
    expect(givenBack.holding.has(0)).toBe(true);
    // a refused attempt gives nothing back: the release ran after it, and its grant holds
    const refused = grantTo("k4", false);
    expect(refused.grantedAt).toBe(5);
    handOvers.close();
  });
});

/** A MemoryStore that counts the waiters it queued (ticketed attempts it refused). */
class CountingMemoryStore extends MemoryStore {
  queued = 0;
  override async acquire(
    keys: readonly string[],
    value: string,
    ttl: number,
    ticket?: QueueTicket,
  ): Promise<AcquireReply> {
    const reply = await super.acquire(keys, value, ttl, ticket);
    if (ticket !== undefined && !reply.acquired) this.queued++;
    return reply;
  }
}

describe.each([
  [
    "Redis",
    () => ({ instances: [redis.client(0)], queued: async () => (await queueSizes([redis.client(0)], "late"))[0] }),
  ],
  [
    "a MemoryStore",
    () => {
      const store = new CountingMemoryStore();
      return { instances: [store], queued: async () => store.queued };
    },
  ],
])("own-waiter grant on %s", (_, setUp) => {
  it("a waiter that waited most of its ttl holds the lock for its ttl from the release, not from its first attempt", async () => {
    const { instances, queued } = setUp();
    let now = 0;
    const dlm = new Redlock(instances, { ...NO_POLLING, clock: () => now });
    try {
      const holder = await dlm.acquire("late", 10_000);
      const waiting = dlm.acquire("late", 10_000, WAIT());
      await until(async () => (await queued()) === 1);
      // the waiter waited 9 s of its 10 s ttl on this Redlock's clock
      now = 9_000;
      expect(await dlm.unlock(holder)).toBe(true);
      const lock = await waiting;
      // from the release, as an acquisition at 9 s: its ttl less the drift (from its first queued attempt, at 0: 898 ms)
      expect(lock.remainingMs).toBe(10_000 - driftFor(10_000, 0.01));
    } finally {
      await dlm.quit();
    }
  });
});

describe.each([1, 3])("own-waiter grant on %i instance(s)", (count) => {
  const redlocks: Redlock[] = [];
  afterEach(async () => {
    await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  });
  const instances = () => redis.clients().slice(0, count);
  const redlock = (): Redlock => {
    const dlm = new Redlock(instances(), NO_POLLING);
    redlocks.push(dlm);
    return dlm;
  };
  /** Resolves once `n` waiters are queued on `key` on each of this test's instances. */
  const queued = (key: string, n: number) =>
    until(async () => (await queueSizes(instances(), key)).every((q) => q === n));
  /** Resolves once every instance holds `key` for `value` (a lock resolves once a quorum answered). */
  const heldEverywhere = (key: string, value: string) =>
    until(async () => (await Promise.all(instances().map((c) => c.get(key)))).every((held) => held === value));
  /**
   * Resolves once a quorum holds `key` for `value` and no instance holds it for anyone else. Not
   * every instance: a claim that reached one before the grant it was racing was let go there is
   * refused, and the lock holds on the others (the let-go then finds nobody in line and frees it).
   */
  const heldOnlyBy = (key: string, value: string) =>
    until(async () => heldByQuorum(await Promise.all(instances().map((c) => c.get(key))), value));

  it("a release gives the key to the same Redlock's waiter: held with its ttl, no message, no claim", async () => {
    const dlm = redlock();
    const key = `grant:${count}`;
    const holder = await dlm.acquire(key, 10_000);
    const waiting = dlm.acquire(key, 30_000, WAIT());
    await queued(key, 1);
    const before = await Promise.all(instances().map(counts));
    expect(await dlm.unlock(holder)).toBe(true);
    const lock = await waiting;
    await heldEverywhere(key, lock.value);
    const after = await Promise.all(instances().map(counts));
    // one script call per instance, the release; no PUBLISH, and no claim by the waiter
    expect(after.map((c, i) => c.scripts - (before[i]?.scripts ?? 0))).toEqual(instances().map(() => 1));
    expect(after.map((c, i) => c.publishes - (before[i]?.publishes ?? 0))).toEqual(instances().map(() => 0));
    expect(lock.valid).toBe(true);
    for (const client of instances()) {
      // the waiter's own ttl, not a hand-over's short hold
      expect(await client.pttl(key)).toBeGreaterThan(10_000);
      expect(await client.zcard(`${key}:redlock-kit:waiters`)).toBe(0);
    }
    expect(await dlm.unlock(lock)).toBe(true);
  });

  it("waiters of one Redlock are granted the key in their order, each release to the next", async () => {
    const dlm = redlock();
    const key = `order:${count}`;
    const order: number[] = [];
    let lock: Lock = await dlm.acquire(key, 10_000);
    const waiters = [1, 2, 3].map((n) =>
      dlm.acquire(key, 10_000, WAIT()).then((held) => {
        order.push(n);
        return held;
      }),
    );
    await queued(key, 3);
    for (const waiter of waiters) {
      expect(await dlm.unlock(lock)).toBe(true);
      lock = await waiter;
    }
    expect(order).toEqual([1, 2, 3]);
    expect(await dlm.unlock(lock)).toBe(true);
  });

  it("a waiter that gave up before the release's reply lets the granted key go to the next in line", async () => {
    const dlm = redlock();
    const key = `left:${count}`;
    const holder = await dlm.acquire(key, 10_000);
    const controller = new AbortController();
    const leaving = dlm.acquire(key, 60_000, { wait: 60_000, signal: controller.signal });
    await queued(key, 1);
    const next = dlm.acquire(key, 10_000, WAIT());
    await queued(key, 2);
    // the release is on its way, granting the key to `leaving`, which gives up before the reply
    const released = dlm.unlock(holder);
    controller.abort(new Error("gave up"));
    await expect(leaving).rejects.toThrow("gave up");
    expect(await released).toBe(true);
    const lock = await next;
    expect(lock.valid).toBe(true);
    // the key granted to `leaving` is let go everywhere (held for its 60 s ttl otherwise)
    await heldOnlyBy(key, lock.value);
    expect(await dlm.unlock(lock)).toBe(true);
  });

  it("a fenced waiter is not granted: it claims the key and gets its fence", async () => {
    const dlm = redlock();
    const key = `fenced:${count}`;
    const first = await dlm.acquire(key, 10_000, { fencing: true });
    const holder = await dlm.acquire(`${key}:other`, 10_000);
    expect(await dlm.unlock(first)).toBe(true);
    const plain = await dlm.acquire(key, 10_000);
    const waiting = dlm.acquire(key, 10_000, { ...WAIT(), fencing: true });
    await queued(key, 1);
    expect(await dlm.unlock(plain)).toBe(true);
    const lock = await waiting;
    expect(BigInt(lock.fence as string)).toBeGreaterThan(BigInt(first.fence as string));
    expect(await dlm.unlock(lock)).toBe(true);
    expect(await dlm.unlock(holder)).toBe(true);
  });
});
