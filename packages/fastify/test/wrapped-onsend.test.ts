/**
 * A plugin that wraps each route's hooks in its onRoute hook (as @fastify/otel does, whatever its
 * place: registered first, as its README asks, or after this one): the HEAD twin's own last step,
 * Fastify's `headRouteOnSendHandler`, is then a wrapper of another name. The lock of a HEAD request
 * whose handler streams must still wait for the producer's end, as without the wrapper.
 */
import { Readable } from "node:stream";
import type { FastifyInstance, onSendHookHandler } from "fastify";
import fp from "fastify-plugin";
import { expect, it } from "vitest";
import { gatedProducer, heldUntilProduced } from "#test-helpers/gate.js";
import { open, send } from "#test-helpers/http-client.js";
import redlockPlugin from "../src/index.js";
import { useFastifyRedlock } from "./bed.js";

const bed = useFastifyRedlock();

/** Wraps every onSend hook of each route, as a tracing plugin does (@fastify/otel's `handlerWrapped`). */
const tracing = fp(async (fastify) => {
  fastify.addHook("onRoute", (route) => {
    if (route.onSend === undefined) return;
    route.onSend = [route.onSend].flat().map(
      (hook): onSendHookHandler =>
        function handlerWrapped(this: FastifyInstance, ...args: Parameters<onSendHookHandler>) {
          return Reflect.apply(hook, this, args);
        },
    );
  });
});

it.each([
  ["before", "Node stream"],
  ["after", "Node stream"],
  ["before", "web stream"],
] as const)(
  "a plugin wrapping route hooks registered %s it, HEAD of a %s: held until the producer ends",
  async (where, kind) => {
    const app = bed.app();
    if (where === "before") await app.register(tracing);
    await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 60_000 });
    if (where === "after") await app.register(tracing);
    const producer = gatedProducer();
    app.get("/export/:id", { config: { redlock: "fastify-wrapped:{params.id}" } }, async (_request, reply) => {
      const out = producer.produce();
      return reply.type("text/plain").send(kind === "Node stream" ? out : Readable.toWeb(out));
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/export/1`;
    const answer = await heldUntilProduced(
      producer,
      send(url, { method: "HEAD" }),
      () => open(url),
      () => bed.redis.exists("fastify-wrapped:1"),
    );
    expect(answer.status).toBe(200);
  },
);

it("a route's own HEAD method (no HEAD step) whose onSend hook returns a stream: held until the producer ends", async () => {
  const app = bed.app();
  await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 60_000 });
  const producer = gatedProducer();
  const toStream: onSendHookHandler = async (_request, reply, payload) =>
    reply.statusCode === 200 ? producer.produce() : payload;
  app.head("/export/:id", { config: { redlock: "fastify-wrapped:{params.id}" }, onSend: toStream }, async () => "");
  app.get(
    "/export/:id",
    { config: { redlock: "fastify-wrapped:{params.id}" }, exposeHeadRoute: false },
    async () => "x",
  );
  await app.listen({ port: 0, host: "127.0.0.1" });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/export/1`;
  const answer = await heldUntilProduced(
    producer,
    send(url, { method: "HEAD" }),
    () => open(url),
    () => bed.redis.exists("fastify-wrapped:1"),
  );
  expect(answer.status).toBe(200);
});
