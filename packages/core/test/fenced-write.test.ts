import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { fencedGet, fencedSet, Redlock } from "../src/index.js";

const redis = useRedisServers(1);
let client: Redis;

beforeAll(() => {
  client = (redis.servers[0] as RedisServer).client();
});

afterEach(async () => {
  await client.flushall();
});

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
    const dlm = new Redlock([client], { fencing: true });
    const older = await dlm.acquire("res", 1000);
    await older.release();
    const newer = await dlm.acquire("res", 1000);
    expect(await fencedSet(client, "res:data", "newer", newer.fence)).toBe(true);
    expect(await fencedSet(client, "res:data", "older", older.fence)).toBe(false);
    await newer.release();
    expect((await fencedGet(client, "res:data"))?.value).toBe("newer");
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
