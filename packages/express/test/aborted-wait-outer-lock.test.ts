import type { Lock } from "@redlock-kit/core";
import express from "express";
import { expect, it } from "vitest";
import { open } from "#test-helpers/http-client.js";
import { arrival, nextAbortedAcquire, nextAcquireStart, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useListeningBed } from "#test-helpers/redlock-bed.js";
import { createRedlockMiddleware } from "../src/index.js";

const bed = useListeningBed();

it("next('route') into a route that waits for another key; the client leaves during that wait: the first lock is released", async () => {
  const redlock = createRedlockMiddleware(bed.dlm, { ttl: 3000 });
  const app = express();
  let first: Lock | undefined;
  app.get("/x", redlock("rq:a"), (req, _res, next) => {
    first = req.lock;
    next("route");
  });
  app.get("/x", redlock("rq:b", { wait: 20_000 }), (_req, res) => res.json({}));
  const url = await bed.listen(app);
  const other = await bed.dlm.acquire(["rq:b"], 60_000);
  const started = nextAcquireStart("rq:b");
  const c = open(`${url}/x`);
  c.request.on("error", () => {});
  await arrival(started, "the wait");
  const aborted = nextAbortedAcquire("rq:b");
  const outcome = releasedOrExpired("rq:a", first as Lock);
  c.request.destroy();
  await arrival(aborted, "the aborted wait");
  expect(await arrival(outcome, "the first lock's end")).toBe("released");
  await bed.dlm.unlock(other);
});

it("a guard (app.use) on one key, its route waiting for another; the client leaves during that wait: the guard's lock is released", async () => {
  const redlock = createRedlockMiddleware(bed.dlm, { ttl: 3000 });
  const app = express();
  let guard: Lock | undefined;
  app.use("/orders/:id", redlock("rq:order:{params.id}"), (req, _res, next) => {
    guard = req.lock;
    next();
  });
  app.post("/orders/:id/pay", redlock("rq:account", { wait: 20_000 }), (_req, res) => res.json({}));
  const url = await bed.listen(app);
  const other = await bed.dlm.acquire(["rq:account"], 60_000);
  const started = nextAcquireStart("rq:account");
  const c = open(`${url}/orders/1/pay`, { method: "POST" });
  c.request.on("error", () => {});
  await arrival(started, "the wait");
  const aborted = nextAbortedAcquire("rq:account");
  const outcome = releasedOrExpired("rq:order:1", guard as Lock);
  c.request.destroy();
  await arrival(aborted, "the aborted wait");
  expect(await arrival(outcome, "the guard lock's end")).toBe("released");
  await bed.dlm.unlock(other);
});
