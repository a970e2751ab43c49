/**
 * A locked route whose lock was lost under the handler, and whose own onSend hook (route options)
 * turns the handler's error into a success (an envelope API that always answers 200): the success
 * must not go out as if the critical section had run alone, as it does not when the same hook is
 * added app-level (addHook), which runs before the plugin's check. The route's own hooks see the 409 itself.
 */
import { Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance, type onSendHookHandler } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { untilInvalid } from "#test-helpers/lock-events.js";
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
  await redis.flushall();
});
afterAll(async () => {
  await dlm.quit();
});

it.each(["app", "route"] as const)(
  "%s-level onSend that makes a 503 a 200 after the lock was lost: 409",
  async (where) => {
    const app = Fastify();
    apps.push(app);
    await app.register(redlockPlugin, { redlock: dlm, ttl: 300, autoExtend: false });
    const envelope: onSendHookHandler = async (_request, reply, payload) => {
      if (reply.statusCode < 500) return payload;
      reply.code(200);
      return JSON.stringify({ ok: false, error: JSON.parse(payload as string) });
    };
    if (where === "app") app.addHook("onSend", envelope);
    app.post(
      "/orders/:id/pay",
      { config: { redlock: "fastify-envelope:{params.id}" }, ...(where === "route" ? { onSend: envelope } : {}) },
      async (request, reply) => {
        await untilInvalid(request.lock as NonNullable<typeof request.lock>);
        return reply.code(503).send({ error: "payment provider unavailable" });
      },
    );
    const answer = await app.inject({ method: "POST", url: "/orders/1/pay" });
    expect([answer.statusCode, answer.json()]).toEqual([409, { error: "Lock was lost" }]);
  },
);

it("a route's own onSend hook sees the 409 of a lost lock, not the handler's success", async () => {
  const app = Fastify();
  apps.push(app);
  await app.register(redlockPlugin, { redlock: dlm, ttl: 300, autoExtend: false });
  const seen: number[] = [];
  app.post(
    "/orders/:id/pay",
    {
      config: { redlock: "fastify-envelope:{params.id}" },
      onSend: async (_request, reply, payload) => {
        seen.push(reply.statusCode);
        return payload;
      },
    },
    async (request) => {
      await untilInvalid(request.lock as NonNullable<typeof request.lock>);
      return { paid: true };
    },
  );
  const answer = await app.inject({ method: "POST", url: "/orders/1/pay" });
  expect([answer.statusCode, seen]).toEqual([409, [409]]);
});
