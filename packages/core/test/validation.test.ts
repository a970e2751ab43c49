import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";
import { type Lock, MemoryStore, Redlock } from "../src/index.js";

const cluster = useRedisServers(3);
let dlm: Redlock;
let clients: Redis[];

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  // the tests' 1 s locks, taken in one attempt or a few: 500 ms per instance, not the default
  // 100 ms a loaded machine's Redis misses (LockUnavailableError). A call's own options, inherited
  // (polluted) ones included, still decide for it.
  dlm = new Redlock(clients, { instanceTimeout: 500 });
});

async function nothingWritten() {
  for (const client of clients) expect(await client.dbsize()).toBe(0);
}

/** A release resolves at a quorum; the last instance's lands a moment later. */
async function releasedEverywhere() {
  await expect.poll(() => Promise.all(clients.map((client) => client.dbsize()))).toEqual([0, 0, 0]);
}

describe("bad input is refused before any Redis call", () => {
  it.each([
    ["undefined", undefined],
    ["null", null],
    ["an empty string", ""],
    ["a number", 42],
    ["an object", { id: 1 }],
    ["an empty array", []],
    ["an array with a non-string", ["a", 1]],
    ["an array with an empty string", ["a", ""]],
    ["an over-long name", "x".repeat(1025)],
    ["a lone surrogate (sent to Redis as U+FFFD, the key of every other one)", "\ud800"],
    ["the name of a fence counter the library keeps beside a lock", "order:1:redlock-kit:fence"],
    ["the name of a queue the library keeps beside a lock", "order:1:redlock-kit:waiters"],
  ])("resource: %s", async (_, resource) => {
    await expect(dlm.lock(resource as never, 1000)).rejects.toThrow(/resource/);
    await nothingWritten();
  });

  it.each([
    // "job:redlock-kit:" + "fence" is the fence counter of "job" for a Redlock without a prefix
    ["job:redlock-kit:", "fence"],
    ["job:redlock-kit", ":waiters"],
    // a prefix ending in ":" as usual: "lock:" + "redlock-kit:fence" is the fence counter of "lock"
    ["lock:", "redlock-kit:fence"],
  ])(
    "resource: one that keyPrefix %j turns into the library's own key beside another lock: %j",
    async (keyPrefix, resource) => {
      const prefixed = new Redlock(clients, { keyPrefix });
      const key = keyPrefix + resource;
      const refusal = `resource ${JSON.stringify(resource)} with keyPrefix ${JSON.stringify(keyPrefix)} is the key ${JSON.stringify(key)}`;
      const error = await prefixed.lock(resource, 1000).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TypeError);
      expect((error as Error).message).toContain(refusal);
      // forceRelease would delete that key, whatever it is
      await expect(prefixed.forceRelease(resource)).rejects.toThrow(refusal);
      await expect(prefixed.inspect(resource)).rejects.toThrow(refusal);
      await nothingWritten();
    },
  );

  it("a resource that keyPrefix turns into another lock's fence counter leaves that counter to its lock", async () => {
    // its fences are counted exactly: no retry (each attempt moves counters) after an answer or a
    // server's INFO later than the default 100 ms bound on a loaded machine
    const fenced = new Redlock(clients, { fencing: true, retryCount: 0, instanceTimeout: 900 });
    const prefixed = new Redlock(clients, { keyPrefix: "job:redlock-kit:", retryCount: 0 });
    try {
      // before: a lock taken first on that key made the fenced acquisitions of "job" fail on its value
      await expect(prefixed.lock("fence", 1000)).rejects.toThrow(TypeError);
      const first = await fenced.acquire("job", 1000);
      expect(first.fences).toEqual({ job: "1" });
      await first.release();
      // and one taken after was refused for ever, by a key without expiry (contention)
      await expect(prefixed.lock("fence", 1000)).rejects.toThrow(TypeError);
      const second = await fenced.acquire("job", 1000);
      expect(second.fences).toEqual({ job: "2" });
      await second.release();
    } finally {
      await Promise.all(clients.map((client) => client.del("job:redlock-kit:fence")));
    }
    await releasedEverywhere();
  });

  it.each([
    ["0", 0, RangeError],
    ["negative", -1, RangeError],
    ["fractional", 0.5, RangeError],
    ["NaN", Number.NaN, RangeError],
    ["Infinity", Number.POSITIVE_INFINITY, RangeError],
    ["2^31", 2 ** 31, RangeError],
    ["a string", "1000", TypeError],
    ["undefined", undefined, TypeError],
  ])("ttl: %s", async (_, ttl, type) => {
    const error = await dlm.lock("r", ttl as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(type);
    expect((error as Error).message).toMatch(/^ttl must be a positive integer of milliseconds below 2\^31, got/);
    await nothingWritten();
  });

  it.each([
    ["retryCount", -1],
    ["retryCount", 1.5],
    ["retryDelay", -5],
    ["retryJitter", "10"],
    ["driftFactor", 0.9],
    ["driftFactor", -0.1],
    ["wait", -1],
    ["instanceTimeout", 0],
    ["signal", "nope"],
  ])("per-call option %s = %s", async (name, value) => {
    await expect(dlm.lock("r", 1000, { [name]: value })).rejects.toThrow(new RegExp(`options\\.${name}`));
    await nothingWritten();
  });

  it.each([
    ["keyPrefix", "app:"],
    ["lazyConnect", true],
    ["clock", () => 0],
  ])("per-call option %s, a constructor option, is refused rather than ignored", async (name, value) => {
    const refusal = (call: string) =>
      new TypeError(
        `options.${name} is not an option of ${call}: it is a constructor option, give it to new Redlock()`,
      );
    await expect(dlm.lock("r", 1000, { [name]: value })).rejects.toThrow(refusal("lock()"));
    await expect(dlm.acquire("r", 1000, { [name]: value })).rejects.toThrow(refusal("acquire()"));
    await expect(dlm.using("r", 1000, () => undefined, { [name]: value })).rejects.toThrow(refusal("using()"));
    await expect(dlm.inspect("r", { [name]: value } as never)).rejects.toThrow(refusal("inspect()"));
    await expect(dlm.isLocked("r", { [name]: value } as never)).rejects.toThrow(refusal("isLocked()"));
    await expect(dlm.forceRelease("r", { [name]: value } as never)).rejects.toThrow(refusal("forceRelease()"));
    expect(() => dlm.checkOptions(1000, { [name]: value })).toThrow(refusal("lock()"));
    await nothingWritten();
  });

  it("an option name no call reads (a misspelling) is a TypeError naming it, nothing sent; undefined passes", async () => {
    const misspelt = { wiat: 2000 } as never;
    await expect(dlm.lock("r", 1000, misspelt)).rejects.toThrow(
      new TypeError("options.wiat is not an option of lock()"),
    );
    await expect(dlm.acquire("r", 1000, misspelt)).rejects.toThrow(/^options\.wiat is not an option of acquire\(\)$/);
    await expect(dlm.using("r", 1000, () => undefined, misspelt)).rejects.toThrow(/of using\(\)$/);
    await expect(dlm.inspect("r", { timeout: 100 } as never)).rejects.toThrow(/^options\.timeout is not an option/);
    await expect(dlm.forceRelease("r", { holders: "abcd0123" } as never)).rejects.toThrow(/^options\.holders is not/);
    expect(() => new Redlock(clients, { retrycount: 0 } as never)).toThrow(
      new TypeError("options.retrycount is not an option of new Redlock()"),
    );
    // auto-extension's options belong to using(): lock() does not extend
    await expect(dlm.lock("r", 1000, { maxHoldMs: 5000 } as never)).rejects.toThrow(
      new TypeError(
        "options.maxHoldMs is not an option of lock(): it sets auto-extension, which using() does (and routes, @Locked)",
      ),
    );
    await nothingWritten();
    // an option left undefined is no setting at all; using() takes its hold options and locks
    const lock = await dlm.lock("r", 1000, { wiat: undefined } as never);
    expect(await lock?.release()).toBe(true);
    expect(await dlm.using("r", 1000, (_signal, held) => held.resources, { maxHoldMs: 5000, wait: 0 })).toEqual(["r"]);
    await releasedEverywhere();
  });

  it("a per-call keyPrefix never takes the unprefixed key while a Redlock with that prefix holds the resource", async () => {
    // DESIGN lists keyPrefix among the options a call may set: ignored, the call locked "order:1"
    // while the Redlock given the prefix held "app:order:1", two holders of one resource
    const prefixed = new Redlock(clients, { keyPrefix: "app:", instanceTimeout: 500 });
    const held = await prefixed.acquire("order:1", 1000);
    const second = await dlm.lock("order:1", 1000, { keyPrefix: "app:", retryCount: 0 } as never).catch(() => null);
    await second?.release();
    expect(second).toBeNull();
    expect(await held.release()).toBe(true);
    await prefixed.quit();
    await releasedEverywhere();
  });

  it("an instanceTimeout not shorter than the ttl", async () => {
    await expect(dlm.lock("r", 100, { instanceTimeout: 100 })).rejects.toThrow(RangeError);
    await nothingWritten();
  });

  it("constructor options and instances", () => {
    expect(() => new Redlock([])).toThrow(TypeError);
    expect(() => new Redlock(null as never)).toThrow(TypeError);
    expect(() => new Redlock([42 as never])).toThrow(/instances\[0\]/);
    expect(() => new Redlock(["http://example.com"])).toThrow(/redis:\/\//);
    expect(() => new Redlock(clients, { retryCount: -1 })).toThrow(/options\.retryCount/);
    expect(() => new Redlock(clients, { maxHoldMs: 0 })).toThrow(/options\.maxHoldMs/);
    expect(() => new Redlock(clients, { keyPrefix: 1 as never })).toThrow(/keyPrefix/);
    expect(() => new Redlock(clients, { lazyConnect: "yes" as never })).toThrow(
      new TypeError('options.lazyConnect must be a boolean, got "yes"'),
    );
  });

  it.each([
    ["Redis", () => clients],
    ["MemoryStore", () => [new MemoryStore()]],
  ])(
    'a keyPrefix with a lone surrogate, on %s: Redis receives U+FFFD for every one ("\\ud800" and "\\udfff" were one prefix there, two in a MemoryStore)',
    (_, instances) => {
      for (const keyPrefix of ["\ud800", "lock:\udfff:"]) {
        expect(() => new Redlock(instances(), { keyPrefix })).toThrow(TypeError);
        expect(() => new Redlock(instances(), { keyPrefix })).toThrow(/options\.keyPrefix must be well-formed Unicode/);
      }
    },
  );

  it("ignores inherited (prototype-polluted) option properties", async () => {
    const polluted = Object.create({ retryCount: -1, wait: "bad" });
    const lock = await dlm.acquire("proto", 1000, polluted);
    expect(await lock.release()).toBe(true);
    await releasedEverywhere();
  });

  it("checks options on every call, frozen or not", async () => {
    // a mutable object may change between calls
    const mutable = { retryCount: 0 };
    await (await dlm.acquire("opts-a", 1000, mutable)).release();
    mutable.retryCount = -1;
    await expect(dlm.acquire("opts-a", 1000, mutable)).rejects.toThrow(/retryCount/);
    // a frozen one with a getter may too
    let reads = 0;
    const getter = Object.freeze({
      get retryCount() {
        return ++reads === 1 ? 0 : -1;
      },
    });
    await (await dlm.acquire("opts-b", 1000, getter)).release();
    await expect(dlm.acquire("opts-b", 1000, getter)).rejects.toThrow(/retryCount/);
    // a frozen data object gives the same answer each time, valid or refused
    const frozen = Object.freeze({ retryCount: 0 });
    for (let i = 0; i < 2; i++) await (await dlm.acquire("opts-c", 1000, frozen)).release();
    const refused = Object.freeze({ retryCount: -1 });
    for (let i = 0; i < 2; i++) await expect(dlm.acquire("opts-c", 1000, refused)).rejects.toThrow(/retryCount/);
    await releasedEverywhere();
  });

  it("reads a resources array once: the names it checked are the ones it locks", async () => {
    // an element whose getter answers a name when checked and something else when read again
    let reads = 0;
    const shifting: unknown[] = ["order:0"];
    Object.defineProperty(shifting, 1, { get: () => (reads++ === 0 ? "order:1" : undefined), enumerable: true });
    const lock = await dlm.acquire(shifting as never, 1000);
    expect(reads).toBe(1);
    expect(lock.resources).toEqual(["order:0", "order:1"]);
    expect(await clients[0]?.get("order:1")).toBe(lock.value);
    expect(await lock.release()).toBe(true);
    await releasedEverywhere();
    let once = 0;
    const single: unknown[] = [];
    Object.defineProperty(single, 0, { get: () => (once++ === 0 ? "order:2" : 42), enumerable: true });
    const one = await dlm.acquire(single as never, 1000);
    expect(one.resources).toEqual(["order:2"]);
    expect(await one.release()).toBe(true);
    await releasedEverywhere();
    // an own iterator that yields a name while the element is a number
    const disguised: unknown[] = [42];
    Object.defineProperty(disguised, Symbol.iterator, { value: [""][Symbol.iterator].bind(["order:3"]) });
    await expect(dlm.lock(disguised as never, 1000)).rejects.toThrow(TypeError);
    await nothingWritten();
  });

  it("extend and unlock refuse things that are not locks, and bad ttls", async () => {
    await expect(dlm.unlock({} as never)).rejects.toThrow(TypeError);
    await expect(dlm.extend({ value: "x" } as never, 1000)).rejects.toThrow(TypeError);
    const lock = (await dlm.acquire("ext", 1000)) as Lock;
    await expect(dlm.extend(lock, 0)).rejects.toThrow(RangeError);
    await lock.release();
    await releasedEverywhere();
    await expect(dlm.using("u", 1000, "not a function" as never)).rejects.toThrow(TypeError);
    await nothingWritten();
  });
});
