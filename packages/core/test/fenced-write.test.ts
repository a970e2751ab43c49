import type { Redis } from "ioredis";
import { createClientPool, RESP_TYPES } from "redis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closeNodeRedis, type NodeRedisClient, nodeRedisClient } from "#test-helpers/node-redis.js";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { fencedGet, fencedSet, MemoryStore, Redlock } from "../src/index.js";

const redis = useRedisServers(1);
let client: Redis;

beforeAll(() => {
  client = (redis.servers[0] as RedisServer).client();
});

afterEach(async () => {
  await client.flushall();
});

/** Two holders of "res" in turn, locked and writing through `c`: the newer one's write wins, the stale one's is refused. */
async function expectStaleHolderRefused(c: Parameters<typeof fencedSet>[0]) {
  const dlm = new Redlock([c], { fencing: true });
  const older = await dlm.acquire("res", 1000);
  await older.release();
  const newer = await dlm.acquire("res", 1000);
  expect(await fencedSet(c, "res:data", "newer", newer.fence)).toBe(true);
  expect(await fencedSet(c, "res:data", "older", older.fence)).toBe(false);
  await newer.release();
  expect(await fencedGet(c, "res:data")).toEqual({ value: "newer", fence: newer.fence });
  await dlm.quit();
}

describe("fencedSet", () => {
  it("writes when the fence is greater than the stored one and refuses an equal or smaller one", async () => {
    expect(await fencedGet(client, "doc")).toBeNull();
    expect(await fencedSet(client, "doc", "first", "5")).toBe(true);
    expect(await fencedSet(client, "doc", "stale", "4")).toBe(false);
    expect(await fencedSet(client, "doc", "same", "5")).toBe(false);
    expect(await fencedGet(client, "doc")).toEqual({ value: "first", fence: "5" });
    expect(await fencedSet(client, "doc", "second", 6n)).toBe(true);
    expect(await fencedGet(client, "doc")).toEqual({ value: "second", fence: "6" });
  });

  it("compares as integers, not as text or doubles: 10 > 9, and 2^53 + 1 > 2^53", async () => {
    expect(await fencedSet(client, "num", "a", "9")).toBe(true);
    expect(await fencedSet(client, "num", "b", "10")).toBe(true);
    expect(await fencedSet(client, "num", "c", "9007199254740992")).toBe(true);
    // equal as doubles, greater as integers
    expect(await fencedSet(client, "num", "d", "9007199254740993")).toBe(true);
    expect(await fencedSet(client, "num", "e", "9007199254740992")).toBe(false);
    expect(await fencedSet(client, "num", "f", "9223372036854775807")).toBe(true);
    expect(await fencedGet(client, "num")).toEqual({ value: "f", fence: "9223372036854775807" });
  });

  it("refuses to compare with a stored fence that is not one (something else wrote the hash): rejects, writes nothing", async () => {
    // as text "1e10" is shorter than "2000000000", so the stale write was taken, though 10^10 is greater:
    // a fence is compared only with a fence
    for (const stored of ["1e10", "0x99999999", "-5", "5.0", " 7", "+3", "007", "", "abc", "9223372036854775808"]) {
      await client.hset("odd", "value", "theirs", "fence", stored);
      await expect(fencedSet(client, "odd", "stale", "2000000000"), stored).rejects.toThrow(/not a fence/);
      expect(await client.hgetall("odd"), stored).toEqual({ value: "theirs", fence: stored });
    }
    // a hash with a value but no fence is not fenced yet: the first fenced write takes it
    await client.del("odd");
    await client.hset("odd", "value", "unfenced");
    expect(await fencedSet(client, "odd", "fenced", "1")).toBe(true);
    expect(await fencedGet(client, "odd")).toEqual({ value: "fenced", fence: "1" });
  });

  it("takes the fence of a lock: the holder after a stale one wins, the stale one is refused", async () => {
    await expectStaleHolderRefused(client);
  });

  it("never lets two keys share one hash: a key with a lone surrogate is refused, as a resource is", async () => {
    // Redis receives UTF-8, where every lone surrogate becomes the same U+FFFD: "doc:\ud800" and
    // "doc:\udfff" would be one hash, and a fence of one resource would be compared with another's
    expect(await fencedSet(client, "doc:ok", "kept", "5")).toBe(true);
    for (const key of ["doc:\ud800", "doc:\udfff", "\udc00x"]) {
      await expect(fencedSet(client, key, "v", "9"), key).rejects.toThrow(/well-formed Unicode/);
      await expect(fencedSet(client, key, "v", "9"), key).rejects.toBeInstanceOf(TypeError);
      await expect(fencedGet(client, key), key).rejects.toBeInstanceOf(TypeError);
    }
    // nor a value that would not read back as written
    await expect(fencedSet(client, "doc:ok", "half \ud83d", "6")).rejects.toBeInstanceOf(TypeError);
    expect(await client.keys("*")).toEqual(["doc:ok"]);
    expect(await fencedGet(client, "doc:ok")).toEqual({ value: "kept", fence: "5" });
    // a well-formed key of any characters is its own hash
    for (const key of ["doc:😀", "doc:{x} y\n\u0000", "doc:\u00e9", "doc:e\u0301"]) {
      expect(await fencedSet(client, key, key, "1"), key).toBe(true);
      expect(await fencedGet(client, key), key).toEqual({ value: key, fence: "1" });
    }
  });

  it("refuses bad input with a typed error before sending anything", async () => {
    const dlm = new Redlock([client]);
    const unfenced = await dlm.acquire("plain", 1000);
    await expect(fencedSet(client, "k", "v", unfenced.fence)).rejects.toThrow(/fencing: true/);
    await expect(fencedSet(client, "k", "v", unfenced.fence)).rejects.toBeInstanceOf(TypeError);
    await unfenced.release();
    for (const fence of ["0", "-1", "01", "1.5", "1e3", " 1", "", "9223372036854775808"]) {
      await expect(fencedSet(client, "k", "v", fence), fence).rejects.toBeInstanceOf(RangeError);
    }
    await expect(fencedSet(client, "k", "v", 0n)).rejects.toBeInstanceOf(RangeError);
    await expect(fencedSet(client, "k", "v", 1 as never)).rejects.toBeInstanceOf(TypeError);
    await expect(fencedSet(client, "", "v", "1")).rejects.toBeInstanceOf(TypeError);
    await expect(fencedSet(client, "k", 5 as never, "1")).rejects.toBeInstanceOf(TypeError);
    await expect(fencedGet(client, undefined as never)).rejects.toBeInstanceOf(TypeError);
    expect(await client.dbsize()).toBe(0);
  });
});

describe("fencedSet and fencedGet on a node-redis client", () => {
  const opened: NodeRedisClient[] = [];
  /** A connected node-redis client of the test server (closed after the suite). */
  const nodeRedis = async (options?: Parameters<typeof nodeRedisClient>[1]) => {
    const opening = nodeRedisClient((redis.servers[0] as RedisServer).port, options);
    opened.push(opening);
    return (await opening.connect()) as NodeRedisClient;
  };
  afterAll(() => closeNodeRedis(opened));

  type Client = Parameters<typeof fencedSet>[0];
  /** What a call came to: its result, or the kind and message of its rejection. */
  const outcome = (call: () => Promise<unknown>) =>
    call().then(
      (result) => ({ result }),
      (error: Error) => ({
        rejected: error instanceof RangeError ? "RangeError" : error instanceof TypeError ? "TypeError" : "server",
        message: error.message,
      }),
    );

  /** One sequence of fenced writes and reads on `c`, with a SCRIPT FLUSH and a hash something else wrote. */
  const sequence = async (c: Client) => {
    const steps = [
      () => fencedGet(c, "doc"),
      () => fencedSet(c, "doc", "first", "5"),
      () => fencedSet(c, "doc", "stale", "4"),
      () => fencedSet(c, "doc", "same", "5"),
      () => fencedGet(c, "doc"),
      () => client.script("FLUSH"),
      // the script is no longer known: EVALSHA answers NOSCRIPT
      () => fencedSet(c, "doc", "second", 6n),
      () => fencedGet(c, "doc"),
      () => fencedSet(c, "num", "a", "9007199254740993"),
      () => fencedSet(c, "num", "b", "9007199254740992"),
      () => fencedGet(c, "num"),
      () => client.hset("odd", "value", "theirs", "fence", "1e10"),
      () => fencedSet(c, "odd", "stale", "2000000000"),
      () => client.hgetall("odd"),
      () => fencedSet(c, "", "v", "7"),
      () => fencedSet(c, "doc:\ud800", "v", "7"),
      () => fencedSet(c, "doc", "half \ud83d", "7"),
      () => fencedSet(c, "doc", 5 as never, "7"),
      () => fencedSet(c, "doc", "v", "007"),
      () => fencedSet(c, "doc", "v", 7 as never),
      () => fencedSet(c, "doc", "v", undefined),
      () => fencedGet(c, undefined as never),
      () => fencedGet(c, "doc"),
      () => client.keys("*").then((keys) => keys.sort()),
    ];
    const outcomes = [];
    for (const step of steps) outcomes.push(await outcome(step));
    await client.flushall();
    return outcomes;
  };

  it("writes a greater fence, refuses an equal or smaller one, reads back, survives SCRIPT FLUSH and refuses a stored non-fence, as on ioredis", async () => {
    const onNodeRedis = await sequence(await nodeRedis());
    const results = onNodeRedis.map((step) => ("result" in step ? step.result : step.rejected));
    expect(results).toEqual([
      null,
      true,
      false,
      false,
      { value: "first", fence: "5" },
      "OK",
      true,
      { value: "second", fence: "6" },
      true,
      false,
      { value: "a", fence: "9007199254740993" },
      2,
      "server",
      { value: "theirs", fence: "1e10" },
      "TypeError",
      "TypeError",
      "TypeError",
      "TypeError",
      "RangeError",
      "TypeError",
      "TypeError",
      "TypeError",
      { value: "second", fence: "6" },
      ["doc", "num", "odd"],
    ]);
    expect(onNodeRedis[12]).toMatchObject({ message: expect.stringMatching(/not a fence/) });
    // the same replies and the same messages, a rejection by Redis included
    expect(onNodeRedis).toEqual(await sequence(client));
  });

  it("reads replies in the default types on a RESP3 client and on clients that map types", async () => {
    const expected = await sequence(client);
    const typeMapping = { [RESP_TYPES.BLOB_STRING]: Buffer, [RESP_TYPES.NUMBER]: String };
    for (const given of [
      await nodeRedis({ RESP: 3 }),
      await nodeRedis({ commandOptions: { typeMapping } }),
      (await nodeRedis()).withTypeMapping(typeMapping) as unknown as NodeRedisClient,
    ]) {
      expect(await sequence(given)).toEqual(expected);
    }
  });

  it("reads integer replies as strings on an ioredis client with stringNumbers: a write is no refusal", async () => {
    expect(await sequence((redis.servers[0] as RedisServer).client({ stringNumbers: true }))).toEqual(
      await sequence(client),
    );
  });

  it("takes the fence of a lock taken through node-redis", async () => {
    await expectStaleHolderRefused(await nodeRedis());
  });

  it("refuses what is not a client (a pool, a legacy-mode client, a Promise, a store) with a TypeError that says what it is", async () => {
    const pool = createClientPool({ socket: { host: "127.0.0.1", port: (redis.servers[0] as RedisServer).port } });
    pool.on("error", () => {});
    await pool.connect();
    const connecting = nodeRedisClient((redis.servers[0] as RedisServer).port);
    opened.push(connecting);
    const promise = connecting.connect();
    try {
      for (const [given, named] of [
        [pool, /client is a node-redis client pool/],
        [
          ((await nodeRedis()) as unknown as { legacy(): object }).legacy(),
          /client is a node-redis legacy-mode client/,
        ],
        [promise, /client is a Promise/],
        [new MemoryStore(), /client must be an ioredis client or Cluster, or a node-redis client/],
        [{ host: "127.0.0.1" }, /client must be an ioredis client/],
        [null, /client must be an ioredis client/],
      ] as const) {
        for (const call of [() => fencedSet(given as never, "k", "v", "1"), () => fencedGet(given as never, "k")]) {
          const error = await call().catch((e: unknown) => e);
          expect(error).toBeInstanceOf(TypeError);
          expect((error as TypeError).message).toMatch(named);
        }
      }
      expect(await client.dbsize()).toBe(0);
    } finally {
      pool.destroy();
      await promise;
    }
  });
});
