import { setTimeout as sleep } from "node:timers/promises";
import { Router } from "@koa/router";
import type { Redlock } from "@redlock-kit/core";
import { createRedlockMiddleware } from "@redlock-kit/koa";
import Koa from "koa";

export interface AppOptions {
  /**
   * How long each handler works while holding its lock, in ms: long enough for a second curl to
   * arrive meanwhile and get 423.
   * @default 500
   */
  workMs?: number;
}

/**
 * The Koa example: the seed route and a route locked per order.
 *
 * @example
 * const app = buildApp(new Redlock(["redis://127.0.0.1:6379"]));
 * app.listen(3000);
 */
export function buildApp(dlm: Redlock, { workMs = 500 }: AppOptions = {}): Koa {
  const app = new Koa();
  const router = new Router();
  // instanceTimeout: each Redis gets 300 ms to answer, where a 1 s lock's default (100 ms) can be
  // missed on a busy laptop or CI machine: a route's one attempt then answers 503
  const redlock = createRedlockMiddleware(dlm, { ttl: 1000, instanceTimeout: 300 });

  // Lock "resource_name" for 1000 ms (auto-extended while the request is in flight); 423 while someone else holds it.
  router.post("/api/resource", redlock("resource_name"), async (ctx) => {
    await sleep(workMs);
    ctx.body = { status: "success" };
  });

  // One lock per order: paying order 1 never waits for order 2.
  router.post("/orders/:id/pay", redlock("order:{params.id}", { ttl: 5000 }), async (ctx) => {
    await sleep(workMs);
    ctx.body = { status: "paid", order: ctx.params.id };
  });

  app.use(router.routes()).use(router.allowedMethods());
  return app;
}
