/**
 * Fencing tokens (docs/fencing.md) on real redis-servers: the shape of `lock.fence`, the
 * write-back that keeps fences monotonic when instances' counters differ, failing closed when the
 * write-back falls short, and that fencing off touches no counter. Faults across processes are in
 * test/fencing-processes.test.ts and test/reliability/fencing-faults.test.ts.
 */
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import {
  type AcquireReply,
  createHttpLockPolicy,
  currentFence,
  FetchResponseTracker,
  holdingLock,
  LockConfigurationError,
  LockContentionError,
  type LockStore,
  LockUnavailableError,
  MemoryStore,
  RedisStore,
  Redlock,
  trackHeldLocks,
} from "../src/index.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];

beforeAll(async () => {
  clients = cluster.servers.map((server) => server.client());
  // the clients say who they are before any test's first call: an instance that has not yet does not vote
  await warmUp(new Redlock(clients), { quit: true });
});

afterEach(async () => {
  await Promise.all(clients.map((client) => client.flushall()));
});

const counter = (key: string) => `${key}:redlock-kit:fence`;
const counters = (key: string) => Promise.all(clients.map((client) => client.get(counter(key))));
const values = (key: string) => Promise.all(clients.map((client) => client.get(key)));

/**
 * For a Redlock whose fences a test counts exactly: each attempt moves the counters of the instances
 * that took the key, so a retry (after an answer later than the default bound, 100 ms for a 1 s
 * lock, on a loaded machine) would silently shift every fence after it. No retry, and time to answer.
 */
const EXACT = { retryCount: 0, instanceTimeout: 900 } as const;

/** Command calls per name on a server since its last CONFIG RESETSTAT. */
async function commandCalls(client: Redis): Promise<Record<string, number>> {
  const calls: Record<string, number> = {};
  for (const match of (await client.info("commandstats")).matchAll(/cmdstat_([\w|]+):calls=(\d+)/g)) {
    calls[match[1] as string] = Number(match[2]);
  }
  return calls;
}

/**
 * Stores on the three servers that run `act` on a node's real server after phase 1's reply and just
 * before phase 2 reaches that node; `replied` sees every phase-1 reply.
 */
function beforeWriteBack(
  act: (client: Redis, index: number, key: string) => Promise<unknown> | undefined,
  replied?: (reply: AcquireReply) => void,
): LockStore[] {
  return clients.map((client, index): LockStore => {
    const store = new RedisStore(client);
    return {
      acquire: store.acquire.bind(store),
      extend: store.extend.bind(store),
      release: store.release.bind(store),
      onHandOver: store.onHandOver.bind(store),
      leaveQueue: store.leaveQueue.bind(store),
      acquireFenced: async (keys, value, ttl, ticket) => {
        const reply = await store.acquireFenced(keys, value, ttl, ticket);
        replied?.(reply);
        return reply;
      },
      raiseFences: async (keys, value, fences) => {
        await act(client, index, keys[0] as string);
        return store.raiseFences(keys, value, fences);
      },
    };
  });
}

/** Stores whose key vanishes (an expiry, a restart) on the nodes `loses` picks, just before phase 2 reaches them. */
const losingKeyBeforeWriteBack = (loses: (index: number) => boolean) =>
  beforeWriteBack((client, index, key) => (loses(index) ? client.del(key) : undefined));

describe("lock.fence and lock.fences", () => {
  it("carry one decimal fence per resource; lock.fence only for a lock on one resource", async () => {
    const dlm = new Redlock(clients, { fencing: true, ...EXACT });
    const one = await dlm.acquire("fence:a", 1000);
    expect(one.fence).toBe("1");
    expect(one.fences).toEqual({ "fence:a": "1" });
    expect(Object.isFrozen(one.fences)).toBe(true);
    await one.release();
    const two = await dlm.acquire(["fence:a", "fence:b", "__proto__"], 1000);
    expect(two.fence).toBeUndefined();
    expect({ ...two.fences }).toEqual({ "fence:a": "2", "fence:b": "1", ["__proto__"]: "1" });
    expect(Object.getPrototypeOf(two.fences)).toBeNull();
    // extension keeps the fence: it is the acquisition's, not the expiry's
    await two.extend(1000);
    expect(two.fences?.["fence:a"]).toBe("2");
    await two.release();
    // counters outlive the release and never expire
    expect(await counters("fence:a")).toEqual(["2", "2", "2"]);
    for (const client of clients) expect(await client.pttl(counter("fence:a"))).toBe(-1);
  });

  it("is off unless asked for, per Redlock or per call, and can be turned off per call", async () => {
    const plain = new Redlock(clients, EXACT);
    const unfenced = await plain.acquire("opt", 1000);
    expect(unfenced.fence).toBeUndefined();
    expect(unfenced.fences).toBeUndefined();
    await unfenced.release();
    const perCall = await plain.acquire("opt", 1000, { fencing: true });
    expect(perCall.fence).toBe("1");
    await perCall.release();
    const fencedByDefault = new Redlock(clients, { fencing: true, ...EXACT });
    const off = await fencedByDefault.acquire("opt", 1000, { fencing: false });
    expect(off.fence).toBeUndefined();
    await off.release();
    expect(await counters("opt")).toEqual(["1", "1", "1"]);
    const used = await fencedByDefault.using("opt", 1000, async (_signal, lock) => lock.fence);
    expect(used).toBe("2");
  });

  it("refuses a non-boolean fencing option and stores that cannot fence, with a TypeError", async () => {
    expect(() => new Redlock(clients, { fencing: "yes" as never })).toThrow(
      new TypeError('options.fencing must be a boolean, got "yes"'),
    );
    const memory = new MemoryStore();
    const plainStore: LockStore = {
      acquire: memory.acquire.bind(memory),
      extend: memory.extend.bind(memory),
      release: memory.release.bind(memory),
    };
    expect(() => new Redlock([plainStore], { fencing: true })).toThrow(/instances\[0\] does not/);
    const dlm = new Redlock([plainStore]);
    await expect(dlm.acquire("x", 1000, { fencing: true })).rejects.toThrow(TypeError);
    // the in-process store fences as RedisStore does
    const inMemory = new Redlock([new MemoryStore()], { fencing: true });
    const first = await inMemory.acquire("m", 1000);
    await first.release();
    expect((await inMemory.acquire("m", 1000)).fence).toBe("2");
  });
});

describe("the write-back (phase 2)", () => {
  it("keeps fences increasing when the instances' counters differ: counters 100, 5, 5", async () => {
    const dlm = new Redlock(clients, { fencing: true, retryCount: 0 });
    await clients[0]?.set(counter("skew"), "100");
    await clients[1]?.set(counter("skew"), "5");
    await clients[2]?.set(counter("skew"), "5");
    // A reaches nodes 0 and 1 (node 2 is held by someone else): its fence is the larger counter
    await clients[2]?.set("skew", "clog", "PX", 5000);
    const a = await dlm.acquire("skew", 1000);
    expect(a.fence).toBe("101");
    // the write-back raised node 1 to 101, and node 2 too: it refused (it did not hold A's key), but
    // a counter left at 5 there would give a quorum of node 2 and a node that lost its data 6
    expect(await counters("skew")).toEqual(["101", "101", "101"]);
    await a.release();
    await clients[2]?.del("skew");
    // B reaches nodes 1 and 2 only; without the write-back it would get 7
    await clients[0]?.set("skew", "clog", "PX", 5000);
    const b = await dlm.acquire("skew", 1000);
    expect(b.fence).toBe("102");
    // B's write-back raised node 0 as well, though another owner held the key there
    expect(await counters("skew")).toEqual(["102", "102", "102"]);
    await b.release();
  });

  it("issues exact fences past 2^53 (decimal strings, never doubles)", async () => {
    await Promise.all(clients.map((client) => client.set(counter("big"), "9007199254740991")));
    const dlm = new Redlock(clients, { fencing: true, ...EXACT });
    const fences: string[] = [];
    for (let i = 0; i < 3; i++) {
      const lock = await dlm.acquire("big", 1000);
      fences.push(lock.fence as string);
      await lock.release();
    }
    expect(fences).toEqual(["9007199254740992", "9007199254740993", "9007199254740994"]);
  });

  it("fails closed when the lock is lost between the phases: no lock, nothing left held", async () => {
    // phase 1 succeeds everywhere, then the key vanishes on two nodes (an expiry, a restart) just
    // before phase 2 reaches them: they answer that the key no longer holds our value, a refusal
    // (every instance answered: no outage)
    const stores = losingKeyBeforeWriteBack((index) => index > 0);
    const dlm = new Redlock(stores, { fencing: true, retryCount: 0 });
    const error = await dlm.acquire("lost", 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockContentionError);
    // nobody holds the keys there: free now, so try again at once (Retry-After's 1 s floor), not after the lock's own ttl
    expect((error as LockContentionError).retryAfterMs).toBe(1);
    expect((error as LockContentionError).headers["Retry-After"]).toBe("1");
    await expect.poll(() => values("lost")).toEqual([null, null, null]);
    // every node counted the attempt in phase 1: the fence is 1 everywhere, and a refusal never lowers a counter
    expect(await counters("lost")).toEqual(["1", "1", "1"]);
  });

  it("fails as contention when another owner took the keys between the phases: 423, not 503; its keys untouched, none of ours left", async () => {
    // phase 1 takes the key on all three nodes; before phase 2 reaches nodes 1 and 2, another owner
    // holds it there (ours expired during a pause and was taken, or was force-released and taken)
    const stores = beforeWriteBack((client, index, key) =>
      index > 0 ? client.set(key, "other-owner", "PX", 60_000) : undefined,
    );
    const dlm = new Redlock(stores, { fencing: true, retryCount: 0 });
    const error = await dlm.acquire("taken", 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockContentionError);
    // the other owner's remaining ttl (read by the write-back), not the lock's own 1 s
    expect((error as LockContentionError).retryAfterMs).toBeGreaterThan(1000);
    expect((error as LockContentionError).retryAfterMs).toBeLessThanOrEqual(60_000);
    const left = async () => {
      // node 0's key, still ours, was given back; the other owner's keys are untouched; no queue left
      expect(await values("taken")).toEqual([null, "other-owner", "other-owner"]);
      for (const client of clients.slice(1)) expect(await client.pttl("taken")).toBeGreaterThan(0);
      const keys = await Promise.all(clients.map((client) => client.keys("*")));
      expect(keys.map((names) => names.sort())).toEqual([
        [counter("taken")],
        ["taken", counter("taken")],
        ["taken", counter("taken")],
      ]);
    };
    await left();
    // lock() resolves null, as for any refusal
    await Promise.all(clients.map((client) => client.del("taken")));
    expect(await dlm.lock("taken", 1000)).toBeNull();
    await left();
    // each attempt counted on every node in phase 1, and a refusal never lowers a counter
    expect(await counters("taken")).toEqual(["2", "2", "2"]);
  });

  it("suggests the new holder's remaining ttl, not the lock's own, when the write-back's refusals cost the quorum (error, Retry-After, HTTP 423)", async () => {
    // our ttl is 60 s; the owner that takes the keys between the phases holds them for 5 s
    const stores = beforeWriteBack((client, index, key) =>
      index > 0 ? client.set(key, "short-owner", "PX", 5000) : undefined,
    );
    const dlm = new Redlock(stores, { fencing: true, retryCount: 0 });
    const error = await dlm.acquire("short", 60_000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockContentionError);
    const { retryAfterMs, headers } = error as LockContentionError;
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(5000);
    expect(headers["Retry-After"]).toMatch(/^[1-5]$/);
    // an HTTP route answers 423 with the same Retry-After
    await Promise.all(clients.map((client) => client.del("short")));
    const outcome = await createHttpLockPolicy(dlm, { ttl: 60_000 })
      .route("short", { fencing: true })
      .beginTracked(
        { params: {}, query: {}, body: undefined, headers: {} },
        new FetchResponseTracker(new AbortController().signal),
      );
    expect(outcome.kind).toBe("rejected");
    const { response } = outcome as Extract<typeof outcome, { kind: "rejected" }>;
    expect(response.status).toBe(423);
    expect(response.headers["Retry-After"]).toMatch(/^[1-5]$/);
  });

  it("a waiting call queues behind the owner its write-back found, as after a refusal, and is handed the lock by its release", async () => {
    let swaps = 0;
    let refused!: () => void;
    const wasRefused = new Promise<void>((resolve) => {
      refused = resolve;
    });
    // the first phase 2 finds another owner on nodes 1 and 2
    const stores = beforeWriteBack(
      (client, index, key) => (index > 0 && swaps++ < 2 ? client.set(key, "other-owner", "PX", 60_000) : undefined),
      (reply) => {
        if (!reply.acquired) refused();
      },
    );
    // polls 60 s apart: within the test only a hand-over can give the call the lock
    const dlm = new Redlock(stores, { fencing: true, retryDelay: 60_000, retryJitter: 0 });
    try {
      const acquiring = dlm.acquire("awaited", 1000, { wait: 60_000, signal: AbortSignal.timeout(15_000) });
      // tried again at once and refused by the owner, which queues it (before: a poll 60 s later)
      await Promise.race([wasRefused, acquiring]);
      // the owner releases: the release script hands the key to the queued call
      await Promise.all(clients.slice(1).map((client) => new RedisStore(client).release(["awaited"], "other-owner")));
      const lock = await acquiring;
      const held = await values("awaited");
      expect(held[0]).not.toBeNull();
      expect(new Set(held).size).toBe(1);
      expect(BigInt(lock.fence as string)).toBeGreaterThanOrEqual(2n);
      await lock.release();
      expect(await values("awaited")).toEqual([null, null, null]);
    } finally {
      await dlm.quit();
    }
  });

  it("fails closed when an instance holds the key but its counter is not a counter it can raise: no confirmation", async () => {
    // node 2's counter was written by something else: a negative integer INCR accepts. Its phase-1
    // vote is no vote (-999 is no fence), but it took the key; its write-back must not count as a
    // confirmation while its counter stays below the fence (compared as text, "-999" looked greater than "101")
    await clients[0]?.set(counter("bent"), "100");
    await clients[1]?.set(counter("bent"), "5");
    await clients[2]?.set(counter("bent"), "-1000");
    // node 1 loses the key between the phases (it expired there)
    const stores = losingKeyBeforeWriteBack((index) => index === 1);
    const dlm = new Redlock(stores, { fencing: true, retryCount: 0 });
    const error = await dlm.acquire("bent", 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect((error as Error).message).toMatch(/written back on a quorum \(1 of 3/);
    const causes = (error as LockUnavailableError).causes;
    expect(causes.map((cause) => [cause.instance, cause.error.message])).toContainEqual([
      2,
      expect.stringMatching(/not a fence counter/),
    ]);
    await expect.poll(() => values("bent")).toEqual([null, null, null]);
    // nothing was raised on node 2: its counter is left for the operator to see (node 1, which
    // refused, was raised to the fence all the same)
    expect(await counters("bent")).toEqual(["101", "101", "-999"]);
  });

  it("names the fence counter, not the lock key, when the counter holds data of another type (WRONGTYPE)", async () => {
    await Promise.all(clients.map((client) => client.hset(counter("typed"), "field", "1")));
    const dlm = new Redlock(clients, { fencing: true, retryCount: 2, retryDelay: 10 });
    const error = await dlm.acquire("typed", 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as Error).message).toBe(
      'A fence counter (the key with ":redlock-kit:fence" appended) holds data of another type on instances[0], instances[1], instances[2] (WRONGTYPE): something else wrote the library\'s key; leave those keys to it, or give Redlock a keyPrefix that keeps its keys apart',
    );
    // the lock key itself was never taken
    expect(await values("typed")).toEqual([null, null, null]);
    // the write-back says the same where the key holds our value (handed over) but the counter another type
    const client = clients[0] as Redis;
    await client.set("typed", "ours", "PX", 5000);
    await expect(new RedisStore(client).raiseFences(["typed"], "ours", ["5"])).rejects.toThrow(
      /^WRONGTYPE a fence counter holds data of another type/,
    );
    // a lock key of another type is still named as such
    await Promise.all(clients.map((client) => client.hset("typed-key", "field", "1")));
    const keyError = await dlm.acquire("typed-key", 1000).catch((e: unknown) => e);
    expect((keyError as Error).message).toMatch(/^A lock key holds data of another type/);
  });

  it("refuses a fenced acquisition without touching a counter when another owner holds the key", async () => {
    await Promise.all(clients.map((client) => client.set("held", "someone-else", "PX", 5000)));
    const dlm = new Redlock(clients, { fencing: true, retryCount: 0 });
    expect(await dlm.lock("held", 1000)).toBeNull();
    expect(await counters("held")).toEqual([null, null, null]);
    expect(await values("held")).toEqual(["someone-else", "someone-else", "someone-else"]);
  });
});

describe("fencing off costs nothing", () => {
  it("touches no counter and keeps the one-key SET NX GET path: no INCR, no fence key, no acquire script", async () => {
    const one = cluster.servers[0] as RedisServer;
    const client = one.client();
    const dlm = new Redlock([client]);
    // counted from here: a first attempt that waited in vain (100 ms) for the new client to say who it
    // is would add a give-back
    await warmUp(dlm);
    await client.config("RESETSTAT");
    await (await dlm.acquire("cheap", 1000)).release();
    const calls = await commandCalls(client);
    // the acquire is one SET (NX PX GET); the one script run is the release
    expect(calls.set).toBe(1);
    expect((calls.evalsha ?? 0) + (calls.eval ?? 0)).toBe(1);
    expect(calls.incr).toBeUndefined();
    client.disconnect();

    // every other unfenced path on three instances: several keys, contention, waiting, extension
    await Promise.all(clients.map((c) => c.config("RESETSTAT")));
    const three = new Redlock(clients, { retryDelay: 20, retryJitter: 10 });
    const held = await three.acquire(["c1", "c2"], 1000);
    expect(await three.lock("c1", 1000, { retryCount: 0 })).toBeNull();
    const waiting = three.acquire("c1", 1000, { wait: 5000 });
    await held.extend(1000);
    await held.release();
    await (await waiting).release();
    await three.quit();
    for (const c of clients) {
      expect(await c.keys("*redlock-kit:fence*")).toEqual([]);
      expect((await commandCalls(c)).incr).toBeUndefined();
    }
  });
});

describe("currentFence(resource)", () => {
  it("is the fence of the innermost enclosing lock that holds the resource, whichever Redlock took it", async () => {
    trackHeldLocks();
    // two Redlocks whose "r" are two keys, with two counters: the inner one's is further on
    const outerDlm = new Redlock(clients, { fencing: true, keyPrefix: "outer:", ...EXACT });
    const innerDlm = new Redlock(clients, { fencing: true, keyPrefix: "inner:", ...EXACT });
    await (await innerDlm.acquire("r", 1000)).release();
    const outer = await outerDlm.acquire("r", 1000);
    const inner = await innerDlm.acquire("r", 1000);
    const innermost = await innerDlm.acquire("other", 1000);
    expect([outer.fence, inner.fence]).toEqual(["1", "2"]);
    const seen = holdingLock(outerDlm, outer, () =>
      holdingLock(innerDlm, inner, () => holdingLock(innerDlm, innermost, () => currentFence("r"))),
    );
    expect(seen).toBe("2");
    // and from the other side: an outer lock of the second Redlock, an inner one of the first
    const reversed = holdingLock(innerDlm, inner, () =>
      holdingLock(outerDlm, outer, () => holdingLock(innerDlm, innermost, () => currentFence("r"))),
    );
    expect(reversed).toBe("1");
    await Promise.all([outer.release(), inner.release(), innermost.release()]);
    await Promise.all([outerDlm.quit(), innerDlm.quit()]);
  });
});
