import { Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { useRedisServers } from "#test-helpers/redis.js";
import redlockPlugin from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
const apps: FastifyInstance[] = [];
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
});
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});
afterAll(async () => {
  await dlm.quit();
});

it("keeps the lock while a handler that handlerTimeout answered for still runs, and releases it once the handler settles", async () => {
  // 1 s: the lock is taken well before it on a loaded machine (a timeout before the lock is H9: the handler never runs)
  const app = Fastify({ handlerTimeout: 1000 });
  apps.push(app);
  await app.register(redlockPlugin, { redlock: dlm, ttl: 10_000 });
  const { open: release, opened } = gate();
  const state = { runs: 0, inside: 0, maxInside: 0 };
  app.post("/x/:id", { config: { redlock: "fastify-timeout:{params.id}" } }, async () => {
    state.runs++;
    state.maxInside = Math.max(state.maxInside, ++state.inside);
    await opened;
    state.inside--;
    return { ran: true };
  });
  await app.ready();
  try {
    expect((await app.inject({ method: "POST", url: "/x/1" })).statusCode).toBe(503);
    // the timed-out handler still runs: the key is held and the next request does not enter
    expect(state.inside).toBe(1);
    expect((await app.inject({ method: "POST", url: "/x/1" })).statusCode).toBe(423);
    expect(await redis.exists("fastify-timeout:1")).toBe(1);
    release();
    // released by the handler's end, not expired: the ttl (10 s) is far beyond the poll's 1 s
    await expect.poll(() => redis.exists("fastify-timeout:1")).toBe(0);
    expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
  } finally {
    release();
  }
});
