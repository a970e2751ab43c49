/**
 * F7, a restart with persistence (docs/reliability.md §3): every node runs with `appendonly yes` and
 * `appendfsync always`, so a key is on disk before its SET is answered. A node of the holder's
 * quorum is killed (SIGKILL) and restarted at once, the case that breaks exclusion without
 * persistence (documented-unsafe.test.ts): here it comes back with the holder's key and the
 * remaining TTL (expiry is an absolute time, so the time it was down counts), and a second client
 * cannot acquire. With fencing on, the node also comes back with the resource's fence counter, so
 * the next holder's fence is still greater (a majority restarted so is in fencing-faults.test.ts).
 */
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { useInvariants } from "../helpers/invariants.js";
import { type RedisServer, useRedisServers } from "../helpers/redis-servers.js";

// long enough for a restart on a loaded machine to come back well within A's validity
const TTL = 10_000;
const cluster = useRedisServers(3, { args: ["--appendonly", "yes", "--appendfsync", "always"] });
const invariants = useInvariants(cluster, { maxTtlMs: TTL });
let direct: Redis[] = [];

beforeAll(async () => {
  direct = cluster.servers.map((server) => server.client());
  await Promise.all(direct.map((client) => client.ping()));
});

const node = (i: number) => cluster.servers[i] as RedisServer;
const valuesOf = (key: string) => Promise.all(direct.map((client) => client.get(key)));

describe("a node of the holder's quorum restarts from its AOF (appendfsync always)", () => {
  it("comes back holding A's key with its remaining TTL; B cannot acquire; A extends and releases on all three", async () => {
    const a = new Redlock(direct, { retryCount: 0 });
    const b = new Redlock(direct, { retryCount: 0 });
    // A holds exactly nodes 0 and 1: node 2 is held by someone else during A's acquire, then freed
    await direct[2]?.set("aof:r", "clog", "PX", 5000);
    const lockA = await a.acquire("aof:r", TTL);
    const acquiredAt = performance.now();
    expect(await valuesOf("aof:r")).toEqual([lockA.value, lockA.value, "clog"]);
    await direct[2]?.del("aof:r");

    invariants.faultInjected();
    await node(1).restart(); // SIGKILL, then at once: no delayed restart to lean on
    await direct[1]?.ping();
    expect(await direct[1]?.get("aof:r")).toBe(lockA.value);
    // read before the PTTL is sent: the time since A's acquire is at least this much when Redis
    // answers it, however long the reply then takes to come back
    const sinceAcquired = performance.now() - acquiredAt;
    const pttl = (await direct[1]?.pttl("aof:r")) ?? -2;
    // what was left of the ttl, less the time since A's acquire, the restart included: the expiry
    // is absolute (a ttl counted again from the restart would exceed it by the restart's duration)
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(TTL - sinceAcquired + 2);

    // B finds A's value on nodes 0 and 1: no quorum, and it is told contention
    expect(await b.lock("aof:r", TTL)).toBeNull();
    expect(await valuesOf("aof:r")).toEqual([lockA.value, lockA.value, null]);
    expect(lockA.valid).toBe(true);
    await lockA.extend(TTL);
    expect(await lockA.release()).toBe(true);
    await expect.poll(() => valuesOf("aof:r")).toEqual([null, null, null]);
  });

  it("with fencing on: comes back with A's key and the fence counter; B waits and gets a greater fence", async () => {
    const a = new Redlock(direct, { retryCount: 0, fencing: true });
    const b = new Redlock(direct, { retryCount: 0, fencing: true });
    await direct[2]?.set("aof:f", "clog", "PX", 5000);
    const lockA = await a.acquire("aof:f", TTL);
    expect(await valuesOf("aof:f")).toEqual([lockA.value, lockA.value, "clog"]);
    await direct[2]?.del("aof:f");
    const counters = await Promise.all(direct.map((client) => client.get("aof:f:redlock-kit:fence")));

    invariants.faultInjected();
    await node(1).restart();
    await direct[1]?.ping();
    expect(await direct[1]?.get("aof:f")).toBe(lockA.value);
    // the counter was written inside the acquire script and the write-back, before their answers
    expect(await direct[1]?.get("aof:f:redlock-kit:fence")).toBe(counters[1]);

    expect(await b.lock("aof:f", TTL)).toBeNull();
    expect(await lockA.release()).toBe(true);
    const lockB = await b.acquire("aof:f", TTL);
    expect(BigInt(lockB.fence as string)).toBeGreaterThan(BigInt(lockA.fence as string));
    expect(await lockB.release()).toBe(true);
  });
});
