import { setTimeout as sleep } from "node:timers/promises";
import type { Redlock } from "@redlock-kit/core";
import redlockPlugin from "@redlock-kit/fastify";
import Fastify, { type FastifyInstance } from "fastify";

export interface AppOptions {
  /**
   * How long each handler works while holding its lock, in ms: long enough for a second curl to
   * arrive meanwhile and get 423.
   * @default 500
   */
  workMs?: number;
}

/**
 * The Fastify example: the seed route and a route locked per order, declared in route `config`.
 *
 * @example
 * const app = await buildApp(new Redlock(["redis://127.0.0.1:6379"]));
 * await app.listen({ port: 3000 });
 */
export async function buildApp(dlm: Redlock, { workMs = 500 }: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify();
  // instanceTimeout: each Redis gets 300 ms to answer, where a 1 s lock's default (100 ms) can be
  // missed on a busy laptop or CI machine: a route's one attempt then answers 503
  await app.register(redlockPlugin, { redlock: dlm, ttl: 1000, instanceTimeout: 300 });

  // Lock "resource_name" for 1000 ms (auto-extended while the request is in flight); 423 while someone else holds it.
  app.post("/api/resource", { config: { redlock: "resource_name" } }, async () => {
    await sleep(workMs);
    return { status: "success" };
  });

  // One lock per order: paying order 1 never waits for order 2.
  app.post<{ Params: { id: string } }>(
    "/orders/:id/pay",
    { config: { redlock: { key: "order:{params.id}", ttl: 5000 } } },
    async (request) => {
      await sleep(workMs);
      return { status: "paid", order: request.params.id };
    },
  );

  return app;
}
