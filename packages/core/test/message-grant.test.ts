/**
 * The grant by message (src/speed/message-grant.ts): a waiter for one key asks to be handed the
 * key for its whole ttl, and a quorum of hand-over messages then gives it the lock without a
 * claim, its validity counted from its first queued attempt. Two Redlocks stand for two processes
 * (each has its own hand-over channel). Script calls are counted with INFO commandstats.
 */
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { queuedChannel, queueOf } from "#test-helpers/queues.js";
import { scriptCalls } from "#test-helpers/workers.js";
import { RedisStore, Redlock, type RedlockOptions } from "../src/index.js";
import { useRedlocks } from "./helpers/redlocks.js";

const redis = useRedlocks(3);

/** A poll interval so long that only a hand-over can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };
/** A wait cut at 15 s: a hand-over that never comes fails the test instead of hanging it. */
const WAIT = () => ({ wait: 60_000, signal: AbortSignal.timeout(15_000) });
const TTL = 30_000;

/** Resolves once `check` holds. */
async function until(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition never held");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe.each([1, 3])("grant by message on %i instance(s)", (count) => {
  const redlocks: Redlock[] = [];
  afterEach(async () => {
    await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  });
  const instances = () => redis.clients().slice(0, count);
  const redlock = (options: RedlockOptions = {}): Redlock => {
    const dlm = new Redlock(instances(), { ...NO_POLLING, ...options });
    redlocks.push(dlm);
    return dlm;
  };
  const queued = (key: string, n: number) =>
    until(async () => (await Promise.all(instances().map((c) => c.zcard(queueOf(key))))).every((q) => q === n));
  const scriptCounts = () => Promise.all(instances().map(scriptCalls));
  /**
   * Script calls per instance since `before`, once every instance ran at least `least` of them: a
   * call resolves once a quorum answered, so the last instance's command may still be on its way.
   */
  const scriptsSince = async (before: readonly number[], least: number) => {
    let since: number[] = [];
    await until(async () => {
      since = (await scriptCounts()).map((n, i) => n - (before[i] ?? 0));
      return since.every((n) => n >= least);
    });
    return since;
  };

  it("a hand-over to another Redlock's waiter is its lock: no claim, the key kept for its ttl", async () => {
    const key = `granted:${count}`;
    const holder = await redlock().acquire(key, 10_000);
    const waiting = redlock().acquire(key, TTL, WAIT());
    await queued(key, 1);
    const before = await scriptCounts();
    await holder.release();
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    // every instance handed the key over (the last release may land after the lock resolved)
    await until(async () => (await Promise.all(instances().map((c) => c.get(key)))).every((v) => v === lock.value));
    // the release alone on each instance: the waiter sent no claim
    expect(await scriptsSince(before, 1)).toEqual(instances().map(() => 1));
    for (const client of instances()) {
      // the waiter's ttl, not a short hold
      expect(await client.pttl(key)).toBeGreaterThan(10_000);
      expect(await client.zcard(queueOf(key))).toBe(0);
    }
    await lock.release();
  });

  it("on clients that prefix their keys (ioredis keyPrefix): still a grant, no claim", async () => {
    const key = `prefixed:${count}`;
    const prefixed = instances().map((_, i) => redis.server(i).client({ keyPrefix: "app:" }));
    try {
      const make = () => {
        const dlm = new Redlock(prefixed, NO_POLLING);
        redlocks.push(dlm);
        return dlm;
      };
      const holder = await make().acquire(key, 10_000);
      const waiting = make().acquire(key, TTL, WAIT());
      await queued(`app:${key}`, 1);
      const before = await scriptCounts();
      await holder.release();
      const lock = await waiting;
      await until(async () =>
        (await Promise.all(instances().map((c) => c.get(`app:${key}`)))).every((v) => v === lock.value),
      );
      // the release alone: the message names the key as the script saw it ("app:…"), which is still
      // the waiter's key (before: taken for another key, passed on, then claimed: 3 script calls)
      expect(await scriptsSince(before, 1)).toEqual(instances().map(() => 1));
      await lock.release();
    } finally {
      await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
      for (const client of prefixed) client.disconnect();
    }
  });

  /**
   * A waiter on `key` (its Redlock's clock moved on by `waitedMs` while it is in line) handed the key
   * by another Redlock's release: its lock, and the script calls each instance ran from the release
   * on, once each ran at least `least` (a call resolves once a quorum answered).
   */
  const handedOver = async (name: string, waitedMs: number, least: number) => {
    const key = `${name}:${count}`;
    let offset = 0;
    const holder = await redlock().acquire(key, 10_000);
    const waiting = redlock({ clock: () => performance.now() + offset }).acquire(key, TTL, WAIT());
    await queued(key, 1);
    offset = waitedMs;
    const before = await scriptCounts();
    await holder.release();
    const lock = await waiting;
    return { lock, scripts: await scriptsSince(before, least) };
  };

  it("counts the validity from the waiter's first queued attempt; claims when less than half its ttl would be left", async () => {
    // 5 s of its 30 s in line: the hand-over is its lock, its validity counted from its queued attempt
    const granted = await handedOver("validity:granted", 5000, 1);
    expect(granted.scripts).toEqual(instances().map(() => 1));
    expect(granted.lock.remainingMs).toBeLessThanOrEqual(TTL - 5000);
    expect(granted.lock.remainingMs).toBeGreaterThan(TTL - 6000);
    await granted.lock.release();

    // 20 s: a grant would leave it under 10 s; it claims the key, held for a whole ttl from the claim
    const half = await handedOver("validity:half", 20_000, 2);
    // the release and the claim on each instance (a grant leaves 1 each, as above)
    expect(half.scripts).toEqual(instances().map(() => 2));
    expect(half.lock.remainingMs).toBeGreaterThan(TTL / 2);
    await half.lock.release();

    // more than the ttl: the hand-over proves nothing any more; claimed too
    const late = await handedOver("validity:late", TTL + 1000, 2);
    expect(late.scripts).toEqual(instances().map(() => 2));
    expect(late.lock.valid).toBe(true);
    expect(late.lock.remainingMs).toBeGreaterThan(TTL - 1000);
    await late.lock.release();
  });

  it("a fenced waiter is not granted by the hand-over: it claims the key", async () => {
    const key = `fenced:${count}`;
    const holder = await redlock().acquire(key, 10_000);
    const waiting = redlock().acquire(key, TTL, { ...WAIT(), fencing: true });
    await queued(key, 1);
    const before = await scriptCounts();
    await holder.release();
    const lock = await waiting;
    expect(lock.fence).toBeDefined();
    // the release, then the claim (the fenced acquire script) on each instance (a grant would
    // leave 1 each, and this wait would time out), and the fence write-back where the claim's
    // answer came in time
    for (const n of await scriptsSince(before, 2)) expect(n).toBeLessThanOrEqual(3);
    await lock.release();
  });
});

describe("grant by message after a give-back", () => {
  /**
   * Keeps `dlm` listening on every instance until it quits (a call of its own waits on a key another
   * owner holds): a release or give-back on an instance where its SUBSCRIBE has not landed yet finds
   * nobody on its channel and skips its waiters (docs/waiting.md), leaving the key free.
   */
  async function listenEverywhere(dlm: Redlock): Promise<void> {
    const clients = redis.clients();
    await Promise.all(clients.map((client) => client.set("held", "other", "PX", 60_000)));
    // ended by quit()
    dlm.acquire("held", TTL, { wait: 60_000 }).catch(() => {});
    await until(async () => (await Promise.all(clients.map((c) => c.zcard(queueOf("held"))))).every((q) => q === 1));
    const subscribers = async (client: Redis) =>
      ((await client.pubsub("NUMSUB", await queuedChannel(client, "held"))) as unknown[])[1];
    await until(async () => (await Promise.all(clients.map(subscribers))).every((n) => n === 1));
  }

  it("a hand-over by an instance the waiter gave a key back to is claimed, not taken as a grant", async () => {
    const clients = redis.clients();
    const key = "gave-back";
    // another owner holds instances 0 and 1; instance 2 is free
    await Promise.all([0, 1].map((i) => redis.client(i).set(key, "other", "PX", 60_000)));
    const dlm = new Redlock(clients, { ...NO_POLLING, instanceTimeout: 5000 });
    try {
      // Heard on instance 2 before the call: otherwise its first attempt carries no queue entry, and
      // the give-back of its second (queued) one may run on instance 2 before its SUBSCRIBE there,
      // leaving the key free (the value read below was null, the call claiming it a hold later).
      await listenEverywhere(dlm);
      const waiting = dlm.acquire(key, TTL, WAIT());
      // its attempt took instance 2, fell short of a quorum and gave the key back there, queued
      // again (the key left free: it heads the queue there)
      await until(async () => (await Promise.all(clients.map((c) => c.zcard(queueOf(key))))).every((q) => q === 1));
      // another owner takes instance 2 and releases it: a hand-over from an instance it gave a key back to
      await redis.client(2).set(key, "other", "PX", 60_000);
      expect(await new RedisStore(redis.client(2)).release([key], "other")).toBe(1);
      const value = (await redis.client(2).get(key)) as string;
      expect(value).not.toBeNull();
      const before = await scriptCalls(redis.client(0));
      // instance 0's owner releases: a hand-over from an instance it never gave a key back to
      expect(await new RedisStore(redis.client(0)).release([key], "other")).toBe(1);
      const lock = await waiting;
      expect(lock.value).toBe(value);
      // instance 2's hand-over may predate its give-back: only 1 grant of the 2 needed, so it claimed
      expect((await scriptCalls(redis.client(0))) - before).toBe(2);
      expect(await dlm.unlock(lock)).toBe(true);
    } finally {
      await dlm.quit();
    }
  });
});
