import { setTimeout as sleep } from "node:timers/promises";
import type { Redlock } from "@redlock-kit/core";
import { createRedlockMiddleware, redlockErrorHandler } from "@redlock-kit/express";
import express, { type Express, type RequestHandler } from "express";

export interface AppOptions {
  /**
   * How long the `/api/resource` and `/orders/:id/pay` handlers work while holding their lock, in ms:
   * long enough for a second curl to arrive meanwhile and get 423.
   * @default 500
   */
  workMs?: number;
  /**
   * How long a counter increment waits between reading and writing, in ms: the window in which a
   * concurrent request reads the same value and one of the two updates is lost.
   * @default 5
   */
  counterGapMs?: number;
}

/**
 * The Express example: the seed route, a route locked per order, and the counters `pnpm demo` races.
 *
 * @example
 * const app = buildApp(new Redlock(["redis://127.0.0.1:6379"]));
 * app.listen(3000);
 */
export function buildApp(dlm: Redlock, { workMs = 500, counterGapMs = 5 }: AppOptions = {}): Express {
  const app = express();
  // instanceTimeout: each Redis gets 300 ms to answer, where a 1 s lock's default (100 ms) can be
  // missed on a busy laptop or CI machine: a route's one attempt then answers 503
  const redlock = createRedlockMiddleware(dlm, { ttl: 1000, instanceTimeout: 300 });

  // Lock "resource_name" for 1000 ms (auto-extended while the request is in flight); 423 while someone else holds it.
  app.post("/api/resource", redlock("resource_name"), async (_req, res) => {
    await sleep(workMs);
    res.json({ status: "success" });
  });

  // One lock per order: paying order 1 never waits for order 2.
  app.post("/orders/:id/pay", redlock("order:{params.id}", { ttl: 5000 }), async (req, res) => {
    await sleep(workMs);
    res.json({ status: "paid", order: req.params.id });
  });

  const counters = new Map<string, number>();
  const increment: RequestHandler<{ name: string }> = async (req, res) => {
    const { name } = req.params;
    const value = counters.get(name) ?? 0;
    await sleep(counterGapMs);
    counters.set(name, value + 1);
    res.json({ name, value: value + 1 });
  };
  // The same read-modify-write twice: without a lock (concurrent requests overwrite each other),
  // and locked per counter, waiting up to 10 s for the lock and retrying every 10-30 ms so that
  // every request gets its turn instead of a 423.
  app.post("/counters/:name/unsafe-increment", increment);
  app.post(
    "/counters/:name/increment",
    redlock("counter:{params.name}", { wait: 10_000, retryDelay: 10, retryJitter: 20 }),
    increment,
  );
  app.get("/counters/:name", (req, res) => {
    res.json({ name: req.params.name, value: counters.get(req.params.name) ?? 0 });
  });

  // Maps a RedlockError thrown outside the route middleware (e.g. by a @Locked service) to its JSON answer (423, 503, 409, 400 or 500).
  app.use(redlockErrorHandler());
  return app;
}
