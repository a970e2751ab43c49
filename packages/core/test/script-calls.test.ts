import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";
import { Redlock } from "../src/index.js";

const redis = useRedisServers(1);
const monitors: Redis[] = [];

afterEach(() => {
  for (const monitor of monitors.splice(0)) monitor.disconnect();
});

/** The EVAL/EVALSHA commands the server runs, in order. */
async function scriptCalls(client: Redis): Promise<string[]> {
  const monitor = await client.monitor();
  monitors.push(monitor);
  const seen: string[] = [];
  monitor.on("monitor", (_time: string, args: string[]) => {
    const name = String(args[0]).toLowerCase();
    if (name.startsWith("eval")) seen.push(name);
  });
  return seen;
}

describe("Script calls", () => {
  it("send each script whole once, then by SHA alone, and whole again when Redis lost them", async () => {
    const client = redis.servers[0]?.client() as Redis;
    await client.ping();
    const seen = await scriptCalls(client);
    const dlm = new Redlock([client]);
    // two resources: a one-key lock is a plain SET NX; two keys take the acquire script
    await dlm.unlock(await dlm.acquire(["calls:1", "calls:1b"], 5000));
    // acquire and release: the first call of each goes through ioredis, which sends the script
    await expect.poll(() => [...seen]).toEqual(["eval", "eval"]);
    await dlm.unlock(await dlm.acquire(["calls:2", "calls:2b"], 5000));
    await expect.poll(() => seen.slice(2)).toEqual(["evalsha", "evalsha"]);
    await client.script("FLUSH");
    const lock = await dlm.acquire(["calls:3", "calls:3b"], 5000);
    expect(await client.get("calls:3")).toBe(lock.value);
    expect(await dlm.unlock(lock)).toBe(true);
    expect(await client.get("calls:3")).toBeNull();
    // NOSCRIPT, then the script sent whole again, for each of the two
    await expect.poll(() => seen.slice(4).filter((name) => name === "eval")).toEqual(["eval", "eval"]);
  });
});
