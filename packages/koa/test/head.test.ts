import http from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import Koa from "koa";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gatedProducer } from "#test-helpers/gate.js";
import { open, send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
const servers: http.Server[] = [];
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
});
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.close();
    server.closeAllConnections();
  }
  await redis.flushall();
});
afterAll(async () => {
  await dlm.quit();
});

async function listen(app: Koa) {
  const server = http.createServer(app.callback()).listen(0, "127.0.0.1");
  servers.push(server);
  await new Promise((resolve) => server.once("listening", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("HEAD on a locked route", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      const redlock = createRedlockMiddleware(dlm, { ttl: 60_000 });
      const app = new Koa();
      const producer = gatedProducer();
      const { state } = producer;
      app.use(redlock("koa-head:1"));
      app.use((ctx) => {
        const out = producer.produce();
        ctx.type = "text/plain";
        ctx.body = kind === "Node stream" ? out : Readable.toWeb(out);
      });
      const url = await listen(app);
      try {
        // Koa answers HEAD once the body has been drained, as it ends a GET's response
        const head = send(url, { method: "HEAD" });
        await expect.poll(() => state.inside).toBe(1);
        // the producer still runs: the next request for the key is refused and never enters
        const get = open(url);
        get.request.on("error", () => {});
        const status = (await get.response).statusCode;
        get.request.destroy();
        expect(status).toBe(423);
        expect(state).toEqual({ runs: 1, inside: 1, maxInside: 1 });
        expect(await redis.exists("koa-head:1")).toBe(1);
        producer.open();
        expect((await head).status).toBe(200);
        // released by the stream's end, not expired: the ttl (60 s) is far beyond the poll's 10 s
        await expect.poll(() => redis.exists("koa-head:1")).toBe(0);
        expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        producer.open();
      }
    });
  }

  it("releases the lock of a JSON body at once", async () => {
    const redlock = createRedlockMiddleware(dlm, { ttl: 60_000 });
    const app = new Koa();
    app.use(redlock("koa-head-json:1"));
    app.use((ctx) => {
      ctx.body = { id: 1 };
    });
    const url = await listen(app);
    const head = await send(url, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toMatch(/json/);
    await expect.poll(() => redis.exists("koa-head-json:1")).toBe(0);
  });
});
