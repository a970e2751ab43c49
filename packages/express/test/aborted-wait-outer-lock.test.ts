/**
 * A route that waits for its key, nested under a lock of its request (an earlier route that called
 * next('route'), or an app.use() guard), whose client leaves during the wait: the request is over
 * and nothing of it runs any more, so the outer lock is released then, as on Koa, not left to lapse
 * after its ttl (nothing ended the response, which is what releases it).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { type Lock, Redlock } from "@redlock-kit/core";
import express from "express";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { open } from "#test-helpers/http-client.js";
import { arrival, nextAbortedAcquire, nextAcquireStart, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
const servers: http.Server[] = [];
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
});
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.close();
    server.closeAllConnections();
  }
  await redis.flushall();
});
afterAll(async () => {
  await dlm.quit();
});

it("next('route') into a route that waits for another key; the client leaves during that wait: the first lock is released", async () => {
  const redlock = createRedlockMiddleware(dlm, { ttl: 3000 });
  const app = express();
  let first: Lock | undefined;
  app.get("/x", redlock("rq:a"), (req, _res, next) => {
    first = req.lock;
    next("route");
  });
  app.get("/x", redlock("rq:b", { wait: 20_000 }), (_req, res) => res.json({}));
  const server = http.createServer(app).listen(0, "127.0.0.1");
  servers.push(server);
  await new Promise((r) => server.once("listening", r));
  const other = await dlm.acquire(["rq:b"], 60_000);
  const started = nextAcquireStart("rq:b");
  const c = open(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x`);
  c.request.on("error", () => {});
  await arrival(started, "the wait");
  const aborted = nextAbortedAcquire("rq:b");
  const outcome = releasedOrExpired("rq:a", first as Lock);
  c.request.destroy();
  await arrival(aborted, "the aborted wait");
  expect(await arrival(outcome, "the first lock's end")).toBe("released");
  await dlm.unlock(other);
});

it("a guard (app.use) on one key, its route waiting for another; the client leaves during that wait: the guard's lock is released", async () => {
  const redlock = createRedlockMiddleware(dlm, { ttl: 3000 });
  const app = express();
  let guard: Lock | undefined;
  app.use("/orders/:id", redlock("rq:order:{params.id}"), (req, _res, next) => {
    guard = req.lock;
    next();
  });
  app.post("/orders/:id/pay", redlock("rq:account", { wait: 20_000 }), (_req, res) => res.json({}));
  const server = http.createServer(app).listen(0, "127.0.0.1");
  servers.push(server);
  await new Promise((r) => server.once("listening", r));
  const other = await dlm.acquire(["rq:account"], 60_000);
  const started = nextAcquireStart("rq:account");
  const c = open(`http://127.0.0.1:${(server.address() as AddressInfo).port}/orders/1/pay`, { method: "POST" });
  c.request.on("error", () => {});
  await arrival(started, "the wait");
  const aborted = nextAbortedAcquire("rq:account");
  const outcome = releasedOrExpired("rq:order:1", guard as Lock);
  c.request.destroy();
  await arrival(aborted, "the aborted wait");
  expect(await arrival(outcome, "the guard lock's end")).toBe("released");
  await dlm.unlock(other);
});
