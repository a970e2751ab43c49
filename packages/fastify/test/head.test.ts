import { Readable } from "node:stream";
import { Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gatedProducer } from "#test-helpers/gate.js";
import { open, send } from "#test-helpers/http-client.js";
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

describe("HEAD on a locked GET route (Fastify's HEAD twin)", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      const app = Fastify();
      apps.push(app);
      await app.register(redlockPlugin, { redlock: dlm, ttl: 60_000 });
      const producer = gatedProducer();
      const { state } = producer;
      app.get("/export/:id", { config: { redlock: "fastify-head:{params.id}" } }, async (_request, reply) => {
        const out = producer.produce();
        return reply.type("text/plain").send(kind === "Node stream" ? out : Readable.toWeb(out));
      });
      const url = await listen(app);
      let get: ReturnType<typeof open> | undefined;
      try {
        const head = await send(`${url}/export/1`, { method: "HEAD" });
        expect(head.status).toBe(200);
        expect(state.inside).toBe(1);
        // the producer still runs: the next request for the key is refused and never enters
        get = open(`${url}/export/1`);
        expect((await get.response).statusCode).toBe(423);
        expect(state).toEqual({ runs: 1, inside: 1, maxInside: 1 });
        expect(await redis.exists("fastify-head:1")).toBe(1);
        producer.open();
        // released by the stream's end, not expired: the ttl (60 s) is far beyond the poll's 10 s
        await expect.poll(() => redis.exists("fastify-head:1")).toBe(0);
        expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        producer.open();
        get?.request.destroy();
      }
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
