/**
 * The lazyConnect option: the clients Redlock creates from options and URLs connect at its first
 * call, so that a Redlock never used opens nothing (a program whose start fails after building
 * one: @redlock-kit/nestjs's RedlockModule), and quit() of such a Redlock opens nothing either.
 */
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { excess, leakedResources, settledResources } from "#test-helpers/invariants.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { type RedisStore, Redlock } from "../src/index.js";

const cluster = useRedisServers(3);
let admins: Redis[] = [];

beforeAll(() => {
  admins = cluster.servers.map((server) => server.client());
});

afterEach(async () => {
  await Promise.all(admins.map((admin) => admin.flushall()));
});

/** Connections each server has accepted since it started. */
const accepted = () =>
  Promise.all(
    admins.map(async (admin) => Number(/total_connections_received:(\d+)/.exec(await admin.info("stats"))?.[1])),
  );

/** Connections each server accepted since `before` was read. */
const acceptedSince = async (before: number[]) => (await accepted()).map((count, i) => count - (before[i] ?? 0));

const statuses = (dlm: Redlock) => dlm.stores.map((store) => (store as RedisStore).client.status);

describe("lazyConnect", () => {
  it("connects the clients Redlock creates at its first call, which locks on every instance; options that say lazyConnect: false connect at once", async () => {
    const baseline = await settledResources();
    const before = await accepted();
    const [a, b, c] = cluster.servers.map((server) => server.port);
    const dlm = new Redlock(
      [`redis://127.0.0.1:${a}`, { host: "127.0.0.1", port: b }, { host: "127.0.0.1", port: c, lazyConnect: false }],
      { lazyConnect: true },
    );
    await expect.poll(() => acceptedSince(before)).toEqual([0, 0, 1]);
    expect(statuses(dlm).slice(0, 2)).toEqual(["wait", "wait"]);
    const lock = await dlm.acquire("lazy", 5000);
    // acquire resolves at a quorum: the last instance's SET may still be on its way
    await expect
      .poll(() => Promise.all(admins.map((admin) => admin.get("lazy"))))
      .toEqual([lock.value, lock.value, lock.value]);
    expect(await acceptedSince(before)).toEqual([1, 1, 1]);
    expect(await lock.release()).toBe(true);
    await dlm.quit();
    expect(await leakedResources(baseline)).toEqual({});
  });

  it("quit() of a Redlock never used opens no connection and leaves nothing behind", async () => {
    const baseline = await settledResources();
    const before = await accepted();
    const dlm = new Redlock(
      cluster.servers.map((server) => `redis://127.0.0.1:${server.port}`),
      { lazyConnect: true },
    );
    expect(statuses(dlm)).toEqual(["wait", "wait", "wait"]);
    await dlm.quit();
    expect(statuses(dlm)).toEqual(["end", "end", "end"]);
    expect(await acceptedSince(before)).toEqual([0, 0, 0]);
    expect(excess(await settledResources(), baseline)).toEqual({});
  });
});
