/**
 * A locked route whose own onSend hook (route options, or one a plugin registered after this one adds
 * in its onRoute hook) replaces the payload with a stream, on HEAD (Fastify's HEAD twin resumes it)
 * and on a 204 (Fastify ends the reply at once): the lock waits for that stream's end, as with the
 * same hook added app-level (addHook). Before, the plugin's hook ran first of the route's and
 * followed the handler's plain payload: the next request for the key got in beside the producer.
 */
import { Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance, type onSendHookHandler } from "fastify";
import fp from "fastify-plugin";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { gatedProducer, heldUntilProduced } from "#test-helpers/gate.js";
import { open, type RequestInit, send } from "#test-helpers/http-client.js";
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

async function scenario(where: "app" | "route" | "plugin", method: RequestInit["method"], status: number) {
  const app = Fastify();
  apps.push(app);
  await app.register(redlockPlugin, { redlock: dlm, ttl: 60_000 });
  const producer = gatedProducer();
  // e.g. a transform/compression/templating step: the body becomes a stream produced from now on
  const toStream: onSendHookHandler = async (_request, reply, payload) => {
    // the locked answer only (not the 423 JSON of the refused request)
    if (reply.statusCode !== status) return payload;
    reply.type("text/plain");
    return producer.produce();
  };
  if (where === "app") app.addHook("onSend", toStream);
  // a plugin registered after this one, adding its hook to each route's own
  const addToRoutes = fp(async (fastify) => {
    fastify.addHook("onRoute", (route) => {
      route.onSend = [...[route.onSend ?? []].flat(), toStream];
    });
  });
  if (where === "plugin") await app.register(addToRoutes);
  app.get(
    "/export/:id",
    { config: { redlock: "fastify-onsend:{params.id}" }, ...(where === "route" ? { onSend: toStream } : {}) },
    async (_request, reply) => reply.code(status).send("x"),
  );
  await app.listen({ port: 0, host: "127.0.0.1" });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/export/1`;
  return heldUntilProduced(
    producer,
    send(url, { method }),
    () => open(url),
    () => redis.exists("fastify-onsend:1"),
  );
}

it.each([
  ["app", "HEAD", 200],
  ["route", "HEAD", 200],
  ["app", "GET", 204],
  ["route", "GET", 204],
  ["plugin", "GET", 204],
] as const)(
  "%s-level onSend stream, %s %i: the lock is held until the stream's producer ends",
  async (where, method, status) => {
    expect((await scenario(where, method, status)).status).toBe(status);
  },
);
