/**
 * Grants that come while a waiting call's last attempt is on its way (src/speed/own-grant.ts,
 * src/speed/message-grant.ts): the attempt is refused everywhere (it ran before the release), and
 * the call ends after it. A quorum of grants heard before the call's deadline is its lock; heard
 * after it, they are let go, as a hand-over to a call that gave up. The waiting Redlock reaches the
 * instances through proxies that hold its attempt's replies back, its subscriber connections
 * directly, and runs on a clock the test moves, so that the deadline passes while the attempt is
 * on its way.
 */
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { heldByQuorum, queueSizes } from "#test-helpers/quorum.js";
import { type Lock, LockContentionError, RedisStore, Redlock } from "../src/index.js";
import { driftFor } from "../src/options.js";
import { useRedlocks } from "./helpers/redlocks.js";

const redis = useRedlocks(3);

const TTL = 30_000;
/** The waiting call's wait, on its Redlock's clock (the test's). */
const WAIT = 1000;
const KEY = "k";

interface Waiting {
  readonly dlm: Redlock;
  readonly proxies: readonly DelayProxy[];
  /** The Redlock's clock. */
  readonly time: { now: number };
  /** Resolves once its subscriber connections heard every message published to them before. */
  heard(): Promise<void>;
  close(): Promise<void>;
}

const closing: Waiting[] = [];
afterEach(async () => {
  for (const waiting of closing.splice(0)) await waiting.close();
});

/**
 * A Redlock that listens for hand-overs (one of its calls waits in line for another key) and has
 * run a call on every connection: its next call queues from its first attempt, its only command.
 */
async function waitingRedlock(): Promise<Waiting> {
  const proxies = await Promise.all([0, 1, 2].map((i) => startDelayProxy(redis.server(i).port)));
  const subscribers: Redis[] = [];
  const own = proxies.map((proxy, i) => {
    const client = new Redis({ host: "127.0.0.1", port: proxy.port });
    const duplicate = client.duplicate.bind(client);
    client.duplicate = (override) => {
      const subscriber = duplicate({ ...override, port: redis.server(i).port });
      subscribers.push(subscriber);
      return subscriber;
    };
    client.on("error", () => {});
    return client;
  });
  const time = { now: 0 };
  // the held replies are waited for, not timed out; only a hand-over wakes a sleep
  const dlm = new Redlock(own, { retryDelay: 60_000, retryJitter: 0, instanceTimeout: 10_000, clock: () => time.now });
  const stop = new AbortController();
  await redis.redlock().acquire("other", TTL);
  const listening = dlm.acquire("other", TTL, { wait: 60_000, signal: stop.signal }).catch(() => {});
  await expect.poll(() => queueSizes(redis.clients(), "other")).toEqual([1, 1, 1]);
  const waiting: Waiting = {
    dlm,
    proxies,
    time,
    // a PING's answer comes behind the messages on the same connection, and a message is handled as it is read
    heard: async () => {
      await Promise.all(subscribers.map((subscriber) => subscriber.ping()));
    },
    close: async () => {
      stop.abort();
      for (const proxy of proxies) proxy.releaseReplies();
      await listening;
      await dlm.quit();
      for (const client of own) client.disconnect();
      await Promise.all(proxies.map((proxy) => proxy.close()));
    },
  };
  closing.push(waiting);
  return waiting;
}

const values = () => Promise.all(redis.clients().map((client) => client.get(KEY)));

/** The call's lock, or what it rejected with. */
const settled = (call: Promise<Lock>): Promise<Lock | unknown> => call.catch((error: unknown) => error);

/**
 * What the call ended with, checked: a lock held on a quorum and by nobody else, which another
 * Redlock cannot take; or a LockContentionError, after which the key is let go everywhere.
 */
async function outcomeOf(outcome: Lock | unknown): Promise<"acquired" | "contention"> {
  if (outcome instanceof LockContentionError) {
    await expect.poll(values).toEqual([null, null, null]);
    const after = await redis.redlock().lock(KEY, TTL, { retryCount: 0 });
    expect(after?.valid).toBe(true);
    return "contention";
  }
  const lock = outcome as Lock;
  expect(lock.valid).toBe(true);
  expect(heldByQuorum(await values(), lock.value)).toBe(true);
  expect(await redis.redlock().lock(KEY, TTL, { retryCount: 0 })).toBeNull();
  return "acquired";
}

describe.each([
  ["before its deadline", "acquired"],
  ["after its deadline", "contention"],
] as const)("a quorum of grants heard while the call's last attempt is on its way, %s", (when, expected) => {
  it(`by message (another Redlock's release): ${expected}`, async () => {
    const { dlm, proxies, time, heard } = await waitingRedlock();
    const holder = await redis.redlock().acquire(KEY, TTL);
    for (const proxy of proxies) proxy.holdReplies();
    const call = settled(dlm.acquire(KEY, TTL, { wait: WAIT }));
    // its attempt ran everywhere: refused, queued
    await expect.poll(() => queueSizes(redis.clients(), KEY)).toEqual([1, 1, 1]);
    if (when === "after its deadline") time.now = WAIT;
    // the holder releases: each instance hands the key to the call for its ttl, and tells it
    expect(await holder.release()).toBe(true);
    await heard();
    time.now = WAIT;
    // the attempt's answers come: refused everywhere, past the deadline
    for (const proxy of proxies) proxy.releaseReplies();
    const outcome = await call;
    expect(await outcomeOf(outcome)).toBe(expected);
    // its validity counts from its first queued attempt, at 0, not from the refused attempt's answer
    if (expected === "acquired") expect((outcome as Lock).remainingMs).toBe(TTL - WAIT - driftFor(TTL, 0.01));
  });

  it(`by a release of its own Redlock: ${expected}`, async () => {
    const { dlm, proxies, time } = await waitingRedlock();
    const [first, second, third] = proxies as [DelayProxy, DelayProxy, DelayProxy];
    const holder = await dlm.acquire(KEY, TTL);
    for (const proxy of proxies) proxy.holdReplies();
    const call = settled(dlm.acquire(KEY, TTL, { wait: WAIT }));
    await expect.poll(() => queueSizes(redis.clients(), KEY)).toEqual([1, 1, 1]);
    time.now = when === "after its deadline" ? WAIT : 100;
    // the release runs behind the attempt on each connection, granting the key to the call
    const released = dlm.unlock(holder);
    await expect
      .poll(async () => (await values()).every((value) => value !== null && value !== holder.value))
      .toBe(true);
    // two instances answer, the attempt's refusal and then the grant: a quorum of grants
    first.releaseReplies();
    second.releaseReplies();
    expect(await released).toBe(true);
    time.now = WAIT;
    // the third answers: the attempt, refused everywhere, ends past the deadline
    third.releaseReplies();
    const outcome = await call;
    expect(await outcomeOf(outcome)).toBe(expected);
    // its validity counts from the release's start, at 100
    if (expected === "acquired") expect((outcome as Lock).remainingMs).toBe(TTL - (WAIT - 100) - driftFor(TTL, 0.01));
  });
});

describe("a grant by a minority while the call's last attempt is on its way", () => {
  it("is not a lock, with the key the attempt took elsewhere either: contention, and both let go", async () => {
    const { dlm, proxies, time, heard } = await waitingRedlock();
    // another owner holds the first two instances; the third is free
    await Promise.all([0, 1].map((i) => redis.client(i).set(KEY, "owner", "PX", 60_000)));
    for (const proxy of proxies) proxy.holdReplies();
    const call = settled(dlm.acquire(KEY, TTL, { wait: WAIT }));
    // its attempt took the third instance and queued it on the first two
    await expect
      .poll(async () => [...(await queueSizes(redis.clients(), KEY)), (await values())[2] !== null])
      .toEqual([1, 1, 0, true]);
    // the owner releases on the first instance: a grant there, heard before the deadline
    expect(await new RedisStore(redis.client(0)).release([KEY], "owner")).toBe(1);
    await heard();
    time.now = WAIT;
    for (const proxy of proxies) proxy.releaseReplies();
    const outcome = await call;
    expect(outcome).toBeInstanceOf(LockContentionError);
    // the granted key and the key its attempt took are let go; the owner's stays
    await expect.poll(values).toEqual([null, "owner", null]);
  });
});

describe("a quorum of grants heard during the last attempt that would leave less than half the ttl", () => {
  it("is claimed, held for a whole ttl from the claim, as after a sleep", async () => {
    const { dlm, proxies, time, heard } = await waitingRedlock();
    const long = 20_000;
    const holder = await redis.redlock().acquire(KEY, TTL);
    for (const proxy of proxies) proxy.holdReplies();
    const call = settled(dlm.acquire(KEY, TTL, { wait: long }));
    await expect.poll(() => queueSizes(redis.clients(), KEY)).toEqual([1, 1, 1]);
    // more than half the ttl in line: a grant would leave the lock less than half its ttl
    time.now = TTL / 2 + 1000;
    expect(await holder.release()).toBe(true);
    await heard();
    time.now = long;
    for (const proxy of proxies) proxy.releaseReplies();
    const outcome = await call;
    expect(await outcomeOf(outcome)).toBe("acquired");
    // counted from the claim (on the test's clock, at the deadline), not from the first queued attempt
    expect((outcome as Lock).remainingMs).toBe(TTL - driftFor(TTL, 0.01));
    for (const client of redis.clients()) expect(await client.pttl(KEY)).toBeGreaterThan(TTL - long);
  });
});
