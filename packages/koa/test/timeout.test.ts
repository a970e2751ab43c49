import http from "node:http";
import type { AddressInfo } from "node:net";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import Koa from "koa";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { send } from "#test-helpers/http-client.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
});
afterAll(async () => {
  await dlm.quit();
});

/** A koa-timeout-style middleware: answers 503 for the rest of the chain once it runs past `ms`. */
function timeout(ms: number): Koa.Middleware {
  return async (ctx, next) => {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), ms);
    });
    const first = await Promise.race([next(), expired]).finally(() => clearTimeout(timer));
    if (first === "expired") {
      ctx.status = 503;
      ctx.body = { error: "timed out" };
    }
  };
}

it("keeps the lock while a handler that a timeout answered for still runs, and releases it once the handler settles", async () => {
  const redlock = createRedlockMiddleware(dlm, { ttl: 60_000 });
  const app = new Koa();
  const { open: release, opened } = gate();
  const state = { runs: 0, inside: 0, maxInside: 0 };
  // 1 s: the lock is taken well before it on a loaded machine (a timeout before the lock is H9: the handler never runs)
  app.use(timeout(1000));
  app.use(redlock("koa-timeout:1"));
  app.use(async (ctx) => {
    state.runs++;
    state.maxInside = Math.max(state.maxInside, ++state.inside);
    await opened;
    state.inside--;
    ctx.body = { ran: true };
  });
  const server = http.createServer(app.callback()).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    expect((await send(url)).status).toBe(503);
    // the timed-out handler still runs: the key is held and the next request does not enter
    expect(state.inside).toBe(1);
    expect((await send(url)).status).toBe(423);
    expect(await redis.exists("koa-timeout:1")).toBe(1);
    const released = nextRelease("koa-timeout:1");
    release();
    // released by the handler's end, not expired: the release found the key still ours (the ttl,
    // 60 s, outlasts the test) and deleted it
    expect((await arrival(released, "the lock's release")).released).toBe(true);
    expect(await redis.exists("koa-timeout:1")).toBe(0);
    expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
  } finally {
    release();
    server.close();
  }
});
