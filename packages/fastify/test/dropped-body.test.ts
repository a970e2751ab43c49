/**
 * Streamed payloads Fastify drops while their producer goes on as for a 200: a HEAD request's (the
 * HEAD twin of a GET route), and a 204's, which Fastify ends at once. The lock waits for the
 * stream's end; the response does not.
 */
import { Readable } from "node:stream";
import { Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
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

async function listen(app: FastifyInstance) {
  await app.listen({ port: 0, host: "127.0.0.1" });
  return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
}

type Kind = "Node stream" | "web stream";

/**
 * A locked GET route whose handler sends `status` (200 unless given) with a streamed payload of
 * `kind`, asked with `method`: the lock waits for the producer's end (ttl 60 s).
 */
async function droppedWhileProducing(kind: Kind, method: RequestInit["method"], status = 200) {
  const app = Fastify();
  apps.push(app);
  await app.register(redlockPlugin, { redlock: dlm, ttl: 60_000 });
  const producer = gatedProducer();
  app.get("/export/:id", { config: { redlock: "fastify-dropped:{params.id}" } }, async (_request, reply) => {
    const out = producer.produce();
    return reply
      .code(status)
      .type("text/plain")
      .send(kind === "Node stream" ? out : Readable.toWeb(out));
  });
  const url = `${await listen(app)}/export/1`;
  return heldUntilProduced(
    producer,
    send(url, { method }),
    () => open(url),
    () => redis.exists("fastify-dropped:1"),
  );
}

describe("HEAD on a locked GET route (Fastify's HEAD twin)", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      expect((await droppedWhileProducing(kind, "HEAD")).status).toBe(200);
    });
  }

  it("releases the lock of a JSON body at once", async () => {
    const app = Fastify();
    apps.push(app);
    await app.register(redlockPlugin, { redlock: dlm, ttl: 60_000 });
    app.get("/order/:id", { config: { redlock: "fastify-head-json:{params.id}" } }, async () => ({ id: 1 }));
    const url = await listen(app);
    const head = await send(`${url}/order/1`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toMatch(/json/);
    await expect.poll(() => redis.exists("fastify-head-json:1")).toBe(0);
  });
});

describe("a 204 with a streamed payload", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`keeps the lock while the dropped ${kind}'s producer runs, and releases it at the stream's end`, async () => {
      expect((await droppedWhileProducing(kind, "GET", 204)).status).toBe(204);
    });
  }
});
