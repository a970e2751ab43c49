import type { onSendHookHandler } from "fastify";
import fp from "fastify-plugin";
import { expect, it } from "vitest";
import { gatedProducer, heldUntilProduced } from "#test-helpers/gate.js";
import { open, type RequestInit, send } from "#test-helpers/http-client.js";
import redlockPlugin from "../src/index.js";
import { useFastifyRedlock } from "./bed.js";

const bed = useFastifyRedlock();

async function scenario(where: "app" | "route" | "plugin", method: RequestInit["method"], status: number) {
  const app = bed.app();
  await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 60_000 });
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
    () => bed.redis.exists("fastify-onsend:1"),
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
