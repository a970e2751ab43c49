import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { closeNodeRedis, connectedNodeRedis, type NodeRedisClient } from "#test-helpers/node-redis.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { type LockStore, MemoryStore, NodeRedisStore, RedisStore } from "../src/index.js";
import { readKey } from "../src/stores/store-reads.js";

const redis = useRedisServers(1);
let nodeRedis: NodeRedisClient[] = [];
beforeAll(async () => {
  nodeRedis = await connectedNodeRedis([redis.servers[0]?.port as number]);
});
afterAll(() => closeNodeRedis(nodeRedis));

/** One contract, run against every store: NodeRedisStore and MemoryStore must behave exactly as RedisStore. */
const stores: [string, () => LockStore][] = [
  ["RedisStore", () => new RedisStore(redis.servers[0]?.client() as never)],
  // integer replies as strings: an extension that worked read as "1" was a lost lock
  ["RedisStore (stringNumbers)", () => new RedisStore(redis.servers[0]?.client({ stringNumbers: true }) as never)],
  ["NodeRedisStore", () => new NodeRedisStore(nodeRedis[0] as NodeRedisClient)],
  ["MemoryStore", () => new MemoryStore()],
];

describe.each(stores)("%s conformance", (_, create) => {
  let store: LockStore;
  beforeEach(async () => {
    store = create();
    if (store instanceof RedisStore || store instanceof NodeRedisStore) await redis.servers[0]?.client().flushall();
  });

  it("acquires free keys and refuses them to another value with the holder's remaining ttl", async () => {
    expect(await store.acquire(["k"], "v1", 1000)).toEqual({ acquired: true });
    const refused = await store.acquire(["k"], "v2", 1000);
    expect(refused.acquired).toBe(false);
    if (!refused.acquired) {
      expect(refused.holderTtl).toBeGreaterThan(500);
      expect(refused.holderTtl).toBeLessThanOrEqual(1000);
    }
  });

  it("refuses several keys with the longest holder ttl among them, whatever their order", async () => {
    await store.acquire(["short"], "other", 2000);
    await store.acquire(["long"], "another", 60_000);
    for (const keys of [
      ["short", "long"],
      ["long", "short"],
    ]) {
      const refused = await store.acquire(keys, "v1", 1000);
      expect(refused.acquired).toBe(false);
      if (!refused.acquired) expect(refused.holderTtl).toBeGreaterThan(50_000);
    }
  });

  it("treats keys already holding the same value as acquired", async () => {
    await store.acquire(["k"], "v1", 1000);
    expect((await store.acquire(["k"], "v1", 1000)).acquired).toBe(true);
  });

  it("is all or nothing over several keys", async () => {
    await store.acquire(["b"], "other", 1000);
    expect((await store.acquire(["a", "b"], "v1", 1000)).acquired).toBe(false);
    expect(await store.release(["a"], "v1")).toBe(0);
    expect((await store.acquire(["a"], "v2", 1000)).acquired).toBe(true);
  });

  it("expires keys after the ttl", async () => {
    await store.acquire(["k"], "v1", 50);
    expect((await store.acquire(["k"], "v2", 1000)).acquired).toBe(false);
    // waits for the expiry itself (a refused attempt changes nothing): a key that never expires fails
    await until(async () => (await store.acquire(["k"], "v2", 1000)).acquired, "the key's expiry");
  });

  it("extends only keys that all still hold the value", async () => {
    await store.acquire(["a", "b"], "v1", 10_000);
    expect(await store.extend(["a", "b"], "v1", 60_000)).toBe(true);
    // more left than the acquire gave: both keys were extended (a count, not a wait past the ttl)
    for (const key of ["a", "b"]) {
      const refused = await store.acquire([key], "v2", 1000);
      expect(refused.acquired).toBe(false);
      if (!refused.acquired) expect(refused.holderTtl).toBeGreaterThan(10_000);
    }
    expect(await store.extend(["a", "b"], "v2", 1000)).toBe(false);
    expect(await store.extend(["missing"], "v1", 1000)).toBe(false);
  });

  it("releases only keys holding the value and counts them", async () => {
    await store.acquire(["a", "b"], "v1", 1000);
    expect(await store.release(["a", "b"], "v2")).toBe(0);
    expect(await store.release(["a", "b"], "v1")).toBe(2);
    expect(await store.release(["a", "b"], "v1")).toBe(0);
    expect((await store.acquire(["a", "b"], "v2", 1000)).acquired).toBe(true);
  });

  it("queues a refused waiter and hands a released key to the oldest one that listens", async () => {
    const heard: string[] = [];
    const stops = await Promise.all([
      store.onHandOver?.("early", (key, value) => heard.push(`early:${key}=${value}`)),
      store.onHandOver?.("late", (key, value) => heard.push(`late:${key}=${value}`)),
    ]);
    const ticket = (channel: string, order: number) => ({ channel, order, holdMs: 1000, keepMs: 5000 });
    await store.acquire(["a"], "holder", 1000);
    // queued out of arrival order: the order number decides
    expect((await store.acquire(["a"], "w2", 1000, ticket("late", 2))).acquired).toBe(false);
    expect((await store.acquire(["a"], "w1", 1000, ticket("early", 1))).acquired).toBe(false);
    expect((await store.acquire(["a"], "gone", 1000, ticket("nobody", 0))).acquired).toBe(false);
    expect(await store.release(["a"], "holder")).toBe(1);
    await until(() => heard.length === 1);
    // "nobody" listens for the first entry: skipped; the key is held for w1, who claims it
    expect(heard).toEqual(["early:a=w1"]);
    expect((await store.acquire(["a"], "w3", 1000)).acquired).toBe(false);
    expect((await store.acquire(["a"], "w1", 1000, ticket("early", 1))).acquired).toBe(true);
    // a waiter that leaves is not handed the key
    await store.leaveQueue?.(["a"], "w2", ticket("late", 2));
    expect(await store.release(["a"], "w1")).toBe(1);
    expect((await store.acquire(["a"], "w3", 1000)).acquired).toBe(true);
    // nor told of it: a later hand-over on the same channel comes after any it would have had
    expect((await store.acquire(["a"], "w4", 1000, ticket("late", 4))).acquired).toBe(false);
    expect(await store.release(["a"], "w3")).toBe(1);
    await until(() => heard.length === 2);
    expect(heard).toEqual(["early:a=w1", "late:a=w4"]);
    for (const stop of stops) stop?.();
  });

  it("a waiter giving back a key queues itself again at its place before the key is handed on, never to itself", async () => {
    const heard: string[] = [];
    const stops = await Promise.all([
      store.onHandOver?.("old", (key, value) => heard.push(`old:${key}=${value}`)),
      store.onHandOver?.("young", (key, value) => heard.push(`young:${key}=${value}`)),
    ]);
    const ticket = (channel: string, order: number) => ({ channel, order, holdMs: 1000, keepMs: 5000 });
    await store.acquire(["g"], "holder", 1000);
    expect((await store.acquire(["g"], "young", 1000, ticket("young", 2))).acquired).toBe(false);
    await store.release(["g"], "holder");
    await until(() => heard.length === 1);
    expect(heard).toEqual(["young:g=young"]);
    // the old waiter took a free key (its entry left that queue), then its attempt failed elsewhere:
    // giving the key back, it is queued again ahead of the young one, and heading the queue it
    // leaves the key free (handed back, it would wake its giver for nothing)
    await store.release(["g"], "young");
    expect((await store.acquire(["g"], "old", 1000, ticket("old", 1))).acquired).toBe(true);
    expect((await store.acquire(["g"], "young", 1000, ticket("young", 2))).acquired).toBe(false);
    expect(await store.release(["g"], "old", ticket("old", 1))).toBe(1);
    expect((await store.acquire(["g"], "holder", 1000)).acquired).toBe(true);
    // it kept its place: the next release hands it the key
    expect(await store.release(["g"], "holder")).toBe(1);
    await until(() => heard.length === 2);
    expect(heard).toEqual(["young:g=young", "old:g=old"]);
    // given back on its last attempt (no ticket): the next in line gets it
    expect(await store.release(["g"], "old")).toBe(1);
    await until(() => heard.length === 3);
    expect(heard).toEqual(["young:g=young", "old:g=old", "young:g=young"]);
    for (const stop of stops) stop?.();
  });

  it("a waiter alone in line that gives a key back leaves the queue's life as it was: once it lapses, a release hands the key to nobody", async () => {
    const stop = await store.onHandOver?.("w", () => {});
    const ticket = { channel: "w", order: 1, holdMs: 60_000, keepMs: 50 };
    // it took a free key (the holder on other instances), its attempt failed elsewhere: it gives the
    // key back, queued again, alone in line
    expect((await store.acquire(["alone"], "w", 1000, ticket)).acquired).toBe(true);
    expect(await store.release(["alone"], "w", ticket)).toBe(1);
    // then it is gone without leaving (SIGKILL, its ZREM lost). The store's own clock: a key set
    // after the queue with a ttl of 50 ms expires no sooner than the queue may
    await store.acquire(["clock"], "tick", 50);
    await until(async () => (await store.acquire(["clock"], "tock", 1000)).acquired, "the clock key's expiry");
    expect((await store.acquire(["alone"], "holder", 1000)).acquired).toBe(true);
    expect(await store.release(["alone"], "holder")).toBe(1);
    // before: the queue, popped empty and made again without its expiry, held the key for the waiter
    expect((await store.acquire(["alone"], "other", 1000)).acquired).toBe(true);
    stop?.();
  });

  it("a queue lives keepMs past its latest entry's queuing, the longest of them, then nobody in it is handed the key", async () => {
    const heard: string[] = [];
    const stop = await store.onHandOver?.("w", (key, value) => heard.push(`${key}=${value}`));
    const ticket = (order: number, keepMs: number) => ({ channel: "w", order, holdMs: 60_000, keepMs });
    await store.acquire(["kept"], "holder", 60_000);
    await store.acquire(["lapsed"], "holder", 60_000);
    // a later entry's shorter keepMs does not shorten its queue's life
    expect((await store.acquire(["kept"], "long", 1000, ticket(2, 60_000))).acquired).toBe(false);
    expect((await store.acquire(["kept"], "short", 1000, ticket(1, 50))).acquired).toBe(false);
    expect((await store.acquire(["lapsed"], "short", 1000, ticket(1, 50))).acquired).toBe(false);
    // the store's own clock: a key set after those queues with a ttl of 50 ms expires no sooner than they may
    await store.acquire(["clock"], "tick", 50);
    await until(async () => (await store.acquire(["clock"], "tock", 1000)).acquired, "the clock key's expiry");
    expect(await store.release(["lapsed"], "holder")).toBe(1);
    // its queue expired: the key is free, not held for the waiter
    expect((await store.acquire(["lapsed"], "other", 1000)).acquired).toBe(true);
    expect(await store.release(["kept"], "holder")).toBe(1);
    expect((await store.acquire(["kept"], "other", 1000)).acquired).toBe(false);
    await until(() => heard.length === 1);
    expect(heard).toEqual(["kept=short"]);
    stop?.();
  });

  it("fenced acquire counts only where it takes the keys: a refusal or a release leaves the counters alone", async () => {
    expect(await store.acquireFenced?.(["a", "b"], "v1", 1000)).toEqual({ acquired: true, fences: ["1", "1"] });
    // refused by the holder: no counter moves
    expect((await store.acquireFenced?.(["b", "c"], "v2", 1000))?.acquired).toBe(false);
    // our own value again (a re-sent call, a handed key) counts as taking it
    expect(await store.acquireFenced?.(["a"], "v1", 1000)).toEqual({ acquired: true, fences: ["2"] });
    expect(await store.release(["a", "b"], "v1")).toBe(2);
    expect(await store.acquireFenced?.(["a", "b", "c"], "v3", 1000)).toEqual({
      acquired: true,
      fences: ["3", "2", "1"],
    });
  });

  it("confirms a write-back only while the keys hold the value, raises the counters even when it refuses, and never lowers one", async () => {
    await store.acquireFenced?.(["a", "b"], "v1", 60_000);
    // another value: compare-and-set refuses and says how long the holder still has; the counters
    // are raised all the same (an instance that refused an acquisition is not left behind its fence)
    const refused = await store.raiseFences?.(["a", "b"], "v2", ["50", "1"]);
    expect(refused).toEqual({ raised: false, holderTtl: expect.any(Number) });
    expect((refused as { holderTtl: number }).holderTtl).toBeGreaterThan(0);
    expect((refused as { holderTtl: number }).holderTtl).toBeLessThanOrEqual(60_000);
    expect(await store.acquireFenced?.(["a"], "v1", 1000)).toEqual({ acquired: true, fences: ["51"] });
    // past 2^53, exactly: counters are decimal strings end to end
    expect(await store.raiseFences?.(["a", "b"], "v1", ["9007199254740993", "1"])).toBe(true);
    expect(await store.acquireFenced?.(["a", "b"], "v1", 1000)).toEqual({
      acquired: true,
      fences: ["9007199254740994", "2"],
    });
    // lower fences (a slower acquisition's write-back) leave the counters where they are
    expect(await store.raiseFences?.(["a", "b"], "v1", ["10", "1"])).toBe(true);
    await store.release(["a", "b"], "v1");
    // the keys are gone: a refusal with no holder, which does not lower a counter either
    expect(await store.raiseFences?.(["a", "b"], "v1", ["10", "1"])).toEqual({ raised: false, holderTtl: -2 });
    expect(await store.acquireFenced?.(["a", "b"], "v4", 60_000)).toEqual({
      acquired: true,
      fences: ["9007199254740995", "3"],
    });
    // one key of several taken by another owner (ttl 1000 < ours): its holder's ttl is the one answered
    await store.release(["b"], "v4");
    await store.acquire(["b"], "v5", 1000);
    const taken = await store.raiseFences?.(["a", "b"], "v4", ["1", "1"]);
    expect(taken).toEqual({ raised: false, holderTtl: expect.any(Number) });
    expect((taken as { holderTtl: number }).holderTtl).toBeLessThanOrEqual(1000);
  });

  it("a one-key release by a listening Redlock hands the key to another Redlock's waiter at the head, as release does", async () => {
    const heard: string[] = [];
    const stop = await store.onHandOver?.("theirs", (key, value) => heard.push(`${key}=${value}`));
    const ticket = { channel: "theirs", order: 1, holdMs: 1000, keepMs: 5000 };
    await store.acquire(["n"], "holder", 1000);
    expect((await store.acquire(["n"], "w", 1000, ticket)).acquired).toBe(false);
    expect(await store.releaseOne?.("n", "holder", "mine", {})).toBe(1);
    expect((await readKey(store, "n"))?.value).toBe("w");
    await until(() => heard.length === 1);
    expect(heard).toEqual(["n=w"]);
    stop?.();
  });

  it("a one-key release grants the key to the releasing Redlock's own waiter at the head: its value for its ttl, no message", async () => {
    const heard: string[] = [];
    const stop = await store.onHandOver?.("mine", (key, value) => heard.push(`${key}=${value}`));
    // a hold the claims below cannot outlast (at 50 ms, a descheduled test found "first"'s key expired)
    const ticket = (order: number) => ({ channel: "mine", order, holdMs: 5000, keepMs: 5000 });
    await store.acquire(["g"], "holder", 1000);
    expect((await store.acquire(["g"], "first", 60_000, ticket(1))).acquired).toBe(false);
    expect((await store.acquire(["g"], "second", 60_000, ticket(2))).acquired).toBe(false);
    // the grant names a waiter that is not the head: the head is handed the key as by release
    expect(await store.releaseOne?.("g", "holder", "mine", { grant: { value: "second", ttl: 60_000 } })).toBe(1);
    const handed = await readKey(store, "g");
    expect(handed?.value).toBe("first");
    expect(handed?.ttlMs).toBeLessThanOrEqual(5000);
    await until(() => heard.length === 1);
    // the head is named: granted for its ttl, its entry gone, nobody told
    expect(await store.releaseOne?.("g", "first", "mine", { grant: { value: "second", ttl: 60_000 } })).toBe(-2);
    const granted = await readKey(store, "g");
    expect(granted?.value).toBe("second");
    expect(granted?.ttlMs).toBeGreaterThan(5000);
    // a release that asks for a reservation grants instead, when the own waiter heads the queue
    expect((await store.acquire(["g"], "third", 60_000, ticket(3))).acquired).toBe(false);
    expect(
      await store.releaseOne?.("g", "second", "mine", {
        reserve: { value: "next", ttl: 60_000 },
        grant: { value: "third", ttl: 60_000 },
      }),
    ).toBe(-2);
    expect((await readKey(store, "g"))?.value).toBe("third");
    // the grants took their entries out of the queue: released now, the key goes to nobody
    expect(await store.release(["g"], "third")).toBe(1);
    expect(await readKey(store, "g")).toBeNull();
    // a hand-over now is heard after any message the grants would have sent
    await store.acquire(["m"], "holder", 1000);
    expect((await store.acquire(["m"], "marker", 1000, ticket(4))).acquired).toBe(false);
    expect(await store.release(["m"], "holder")).toBe(1);
    await until(() => heard.length === 2);
    expect(heard).toEqual(["g=first", "m=marker"]);
    stop?.();
  });
});

/** What Jest's fake timers hold by default (all but process.nextTick, which vitest cannot fake in its forks pool). */
const JEST_FAKES = [
  "setTimeout",
  "clearTimeout",
  "setImmediate",
  "clearImmediate",
  "setInterval",
  "clearInterval",
  "Date",
  "hrtime",
  "performance",
  "queueMicrotask",
] as const;

/**
 * A user's unit test with fake timers (MemoryStore's reason to be): a hand-over must reach its
 * waiter as it does from Redis. Not NodeRedisStore: node-redis writes its commands at setImmediate,
 * which these fakes hold, so under them it sends nothing at all (and stays stuck after).
 */
describe.each(stores.filter(([name]) => name !== "NodeRedisStore"))("%s under a user's fake timers", (_, create) => {
  let store: LockStore;
  beforeEach(async () => {
    store = create();
    if (store instanceof RedisStore) await redis.servers[0]?.client().flushall();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("hands a released key over: nothing the fakes hold (Jest's defaults) carries the message", async () => {
    const heard: string[] = [];
    const stop = await store.onHandOver?.("faked", (key, value) => heard.push(`${key}=${value}`));
    await store.acquire(["t"], "holder", 60_000);
    const ticket = { channel: "faked", order: 1, holdMs: 60_000, keepMs: 60_000 };
    expect((await store.acquire(["t"], "w", 60_000, ticket)).acquired).toBe(false);
    vi.useFakeTimers({ toFake: [...JEST_FAKES] });
    expect(await store.release(["t"], "holder")).toBe(1);
    // a Redis store's message comes by socket, which fake timers never touch
    await until(() => heard.length === 1, "the hand-over's message");
    vi.useRealTimers();
    expect(heard).toEqual(["t=w"]);
    stop?.();
  });
});

/** speed/retake.ts's reservation: the Redis stores only (a MemoryStore reserves nothing, below). */
describe.each(stores.filter(([name]) => name !== "MemoryStore"))("%s retake", (_, create) => {
  let store: LockStore;
  beforeEach(async () => {
    store = create();
    await redis.servers[0]?.client().flushall();
  });

  it("a retake release reserves the key (the next lock's value, its ttl, nobody told) unless a waiter of the releasing Redlock heads the queue", async () => {
    const raw = redis.servers[0]?.client() as Redis;
    const heard: string[] = [];
    const stops = await Promise.all([
      store.onHandOver?.("mine", (key, value) => heard.push(`mine:${key}=${value}`)),
      store.onHandOver?.("theirs", (key, value) => heard.push(`theirs:${key}=${value}`)),
    ]);
    const ticket = (channel: string, order: number) => ({ channel, order, holdMs: 1000, keepMs: 5000 });
    await store.acquire(["r"], "holder", 1000);
    expect((await store.acquire(["r"], "w", 1000, ticket("theirs", 1))).acquired).toBe(false);
    expect(await store.releaseOne?.("r", "holder", "mine", { reserve: { value: "next", ttl: 60_000 } })).toBe(-1);
    // set to the reserved value for its ttl, not handed over: the waiter keeps its place and is told nothing
    expect(await raw.get("r")).toBe("next");
    expect(await raw.pttl("r")).toBeGreaterThan(1000);
    expect(await raw.zcard("r:redlock-kit:waiters")).toBe(1);
    // releasing the reserved value hands the key over
    expect(await store.release(["r"], "next")).toBe(1);
    expect(await raw.get("r")).toBe("w");
    await until(() => heard.length === 1);
    expect(heard).toEqual(["theirs:r=w"]);
    // nobody queued: reserved too
    expect((await store.acquire(["r"], "w", 1000, ticket("theirs", 1))).acquired).toBe(true);
    expect(await store.releaseOne?.("r", "w", "mine", { reserve: { value: "next2", ttl: 60_000 } })).toBe(-1);
    expect(await raw.get("r")).toBe("next2");
    // the releasing Redlock's own waiter heads the queue: handed over as by release
    expect((await store.acquire(["r"], "own", 1000, ticket("mine", 2))).acquired).toBe(false);
    expect(await store.releaseOne?.("r", "next2", "mine", { reserve: { value: "next3", ttl: 60_000 } })).toBe(1);
    expect(await raw.get("r")).toBe("own");
    await until(() => heard.length === 2);
    expect(heard).toEqual(["theirs:r=w", "mine:r=own"]);
    // not ours: nothing deleted, nothing reserved
    expect(await store.releaseOne?.("r", "w", "mine", { reserve: { value: "next4", ttl: 60_000 } })).toBe(0);
    expect(await raw.get("r")).toBe("own");
    for (const stop of stops) stop?.();
  });

  it("a retake release by a Redlock none of whose waiters is queued (ownQueued: false) reserves the key without reading the queue", async () => {
    const raw = redis.servers[0]?.client() as Redis;
    const ticket = (channel: string, order: number) => ({ channel, order, holdMs: 1000, keepMs: 5000 });
    await store.acquire(["q"], "holder", 1000);
    // another Redlock's waiter heads the queue: reserved, as with the queue read
    expect((await store.acquire(["q"], "w", 1000, ticket("theirs", 1))).acquired).toBe(false);
    const how = (value: string) => ({ reserve: { value, ttl: 60_000 }, ownQueued: false });
    expect(await store.releaseOne?.("q", "holder", "mine", how("next"))).toBe(-1);
    expect(await raw.get("q")).toBe("next");
    expect(await raw.pttl("q")).toBeGreaterThan(1000);
    // the channel as this instance names it (stores/instance-channel.ts)
    expect(await raw.zrange("q:redlock-kit:waiters", "0", "-1")).toEqual([
      expect.stringMatching(/^theirs\.[\w-]+:1000:w$/),
    ]);
    // the queue is not read: an entry of the releasing Redlock left at its head (which the Redlock
    // says cannot be there) does not stop the reservation, where a release that reads it hands over
    const stop = await store.onHandOver?.("mine", () => {});
    expect((await store.acquire(["q"], "stale", 1000, ticket("mine", 0))).acquired).toBe(false);
    expect(await store.releaseOne?.("q", "next", "mine", how("next2"))).toBe(-1);
    expect(await raw.get("q")).toBe("next2");
    expect(await store.releaseOne?.("q", "next2", "mine", { reserve: { value: "next3", ttl: 60_000 } })).toBe(1);
    expect(await raw.get("q")).toBe("stale");
    // not ours: nothing set
    expect(await store.releaseOne?.("q", "next2", "mine", how("next4"))).toBe(0);
    expect(await raw.get("q")).toBe("stale");
    stop?.();
  });
});

/**
 * MemoryStore has no retake (README, Stores): in one process a hand-over wakes no other process, and
 * a reservation is let go only at the end of the event-loop turn, which a test's fake timers hold.
 */
describe("MemoryStore retake", () => {
  it("reserves nothing: a release that asks to reserve the key hands it to the head of the queue, or frees it", async () => {
    const store = new MemoryStore();
    const heard: string[] = [];
    const stop = await store.onHandOver("theirs", (key, value) => heard.push(`${key}=${value}`));
    await store.acquire(["r"], "holder", 1000);
    const ticket = { channel: "theirs", order: 1, holdMs: 1000, keepMs: 5000 };
    expect((await store.acquire(["r"], "w", 1000, ticket)).acquired).toBe(false);
    const reserve = { value: "next", ttl: 60_000 };
    expect(await store.releaseOne("r", "holder", "mine", { reserve })).toBe(1);
    expect((await store.inspect("r"))?.value).toBe("w");
    await until(() => heard.length === 1);
    expect(await store.releaseOne("r", "w", "mine", { reserve, ownQueued: false })).toBe(1);
    expect(await store.inspect("r")).toBeNull();
    expect(heard).toEqual(["r=w"]);
    stop();
  });
});

/** The real setTimeout, taken before any test fakes it. */
const realSetTimeout = globalThis.setTimeout;

/**
 * Resolves once `check` holds (a published message arrives a moment after the command's reply),
 * polling every 5 ms for about 10 s on the real timers (a test may fake the clocks too).
 */
async function until(check: () => boolean | Promise<boolean>, what = "condition"): Promise<void> {
  for (let polls = 0; !(await check()); polls++) {
    if (polls === 2000) throw new Error(`${what} never held`);
    await new Promise((resolve) => realSetTimeout(resolve, 5));
  }
}
