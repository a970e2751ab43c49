/**
 * redlock-kit on node-redis and node-redlock (the `redlock` package, on ioredis) lock the same keys
 * of the same servers: each refuses the other's lock, neither's release deletes the other's key,
 * and a redlock-kit waiter takes a key that node-redlock released (by polling: node-redlock
 * announces no hand-over).
 */
import { LockContentionError, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import NodeRedlock from "redlock";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { closeNodeRedis, connectedNodeRedis, type NodeRedisClient } from "./helpers/node-redis.js";
import { heldByQuorum } from "./helpers/quorum.js";
import { useRedisServers } from "./helpers/redis-servers.js";

const servers = useRedisServers(3);
let nodeRedis: NodeRedisClient[] = [];
let ioredis: Redis[] = [];
let kit: Redlock;
let other: NodeRedlock;

beforeAll(async () => {
  nodeRedis = await connectedNodeRedis(servers.servers.map((server) => server.port));
  ioredis = servers.servers.map((server) => server.client());
  kit = new Redlock(nodeRedis, { retryCount: 0 });
  other = new NodeRedlock(ioredis, { retryCount: 0 });
});

afterEach(async () => {
  await Promise.all(ioredis.map((client) => client.flushall()));
});

afterAll(async () => {
  await kit.quit();
  closeNodeRedis(nodeRedis);
});

/** The values under `key` once the commands both libraries sent have landed (a quorum may answer first). */
const valuesOf = async (key: string) => {
  await Promise.all([...nodeRedis.map((client) => client.ping()), ...ioredis.map((client) => client.ping())]);
  return Promise.all(ioredis.map((client) => client.get(key)));
};

it("refuses a key node-redlock holds, with its remaining ttl, and takes it once node-redlock released it", async () => {
  const theirs = await other.acquire(["interop:a"], 10_000);
  // node-redlock's acquire resolves on a quorum: the key is theirs everywhere once the rest landed,
  // before kit tries (kit's attempt could otherwise take the last instance first, and theirs miss it)
  expect(await valuesOf("interop:a")).toEqual([theirs.value, theirs.value, theirs.value]);
  const refused = await kit.acquire("interop:a", 5000).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(LockContentionError);
  expect((refused as LockContentionError).retryAfterMs).toBeGreaterThan(5000);
  expect(await valuesOf("interop:a")).toEqual([theirs.value, theirs.value, theirs.value]);
  await theirs.release();
  // node-redlock's release resolves on a quorum: the key is free everywhere once the rest landed
  expect(await valuesOf("interop:a")).toEqual([null, null, null]);
  const ours = await kit.acquire("interop:a", 5000);
  expect(await valuesOf("interop:a")).toEqual([ours.value, ours.value, ours.value]);
  expect(await ours.release()).toBe(true);
});

it("holds a key node-redlock cannot take, and node-redlock's release of another value leaves it alone", async () => {
  const ours = await kit.acquire("interop:b", 10_000);
  // kit's acquire resolves at a quorum: ours everywhere before node-redlock tries
  expect(await valuesOf("interop:b")).toEqual([ours.value, ours.value, ours.value]);
  await expect(other.acquire(["interop:b"], 5000)).rejects.toThrow(/quorum/);
  // a node-redlock lock object on the same key with its own value: its compare-and-delete refuses
  await other.release({ resources: ["interop:b"], value: "not-ours" } as never).catch(() => {});
  expect(await valuesOf("interop:b")).toEqual([ours.value, ours.value, ours.value]);
  expect(await ours.release()).toBe(true);
  const theirs = await other.acquire(["interop:b"], 5000);
  await theirs.release();
});

it("excludes node-redlock from a multi-resource lock on any of its keys", async () => {
  const ours = await kit.acquire(["interop:c", "interop:d"], 10_000);
  await expect(other.acquire(["interop:d", "interop:e"], 5000)).rejects.toThrow(/quorum/);
  expect(await valuesOf("interop:e")).toEqual([null, null, null]);
  await ours.release();
});

it("a waiter on node-redis takes the key by polling after node-redlock releases it", async () => {
  const theirs = await other.acquire(["interop:wait"], 10_000);
  expect(await valuesOf("interop:wait")).toEqual([theirs.value, theirs.value, theirs.value]);
  const waiting = kit.acquire("interop:wait", 5000, { wait: 10_000, retryDelay: 20, retryJitter: 20 });
  // the waiter was refused everywhere and queued (node-redlock will not hand the key over): it takes
  // the key by polling once node-redlock released it, not by finding it free at its first attempt
  await expect
    .poll(() => Promise.all(ioredis.map((client) => client.zcard("interop:wait:redlock-kit:waiters"))))
    .toEqual([1, 1, 1]);
  await theirs.release();
  const ours = await waiting;
  // ours on a quorum, nobody else's anywhere: node-redlock's release resolves on a quorum, so the
  // poll may reach the last instance before that release and be refused there (a lock held on 2 of 3)
  expect(await valuesOf("interop:wait")).toSatisfy((values: (string | null)[]) => heldByQuorum(values, ours.value));
  await ours.release();
});
