/**
 * Streamed bodies Koa drops unsent while their producer goes on as for a 200: a HEAD request's, and
 * one set after a status without content (204, 304). Koa would destroy the stream unread; the lock
 * waits for its end, and so does the response, as a 200's does.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { PassThrough, Readable } from "node:stream";
import { type Lock, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import Koa from "koa";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gate, gatedProducer, heldUntilProduced } from "#test-helpers/gate.js";
import { open, type RequestInit, send } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
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

type Kind = "Node stream" | "web stream";

/**
 * A locked app whose handler answers `status` (200 unless given) with a streamed body of `kind`,
 * asked with `method`: the lock, and Koa's answer, wait for the producer's end (ttl 60 s).
 */
async function droppedWhileProducing(kind: Kind, method: RequestInit["method"], status?: number) {
  const redlock = createRedlockMiddleware(dlm, { ttl: 60_000 });
  const app = new Koa();
  const producer = gatedProducer();
  app.use(redlock("koa-dropped:1"));
  app.use((ctx) => {
    const out = producer.produce();
    if (status !== undefined) ctx.status = status;
    ctx.type = "text/plain";
    ctx.body = kind === "Node stream" ? out : Readable.toWeb(out);
  });
  const url = await listen(app);
  return heldUntilProduced(
    producer,
    send(url, { method }),
    () => open(url),
    () => redis.exists("koa-dropped:1"),
  );
}

describe("HEAD on a locked route", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      expect((await droppedWhileProducing(kind, "HEAD")).status).toBe(200);
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

describe("a status without content set before a streamed body", () => {
  const cases = [
    [204, "Node stream"],
    [204, "web stream"],
    [304, "Node stream"],
  ] as const;
  for (const [status, kind] of cases) {
    it(`${status} with a ${kind}: keeps the lock while the dropped body's producer runs, and releases it at the stream's end`, async () => {
      expect((await droppedWhileProducing(kind, "GET", status)).status).toBe(status);
    });
  }
});

describe("a HEAD request whose client leaves while its dropped body is read", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`stops the ${kind}, as Koa stops a GET's body whose client left, and the lock lapses within one ttl`, async () => {
      // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
      const redlock = createRedlockMiddleware(dlm, { ttl: 500, instanceTimeout: 300 });
      const app = new Koa();
      const started = gate();
      const stopped = gate();
      let lock: Lock | undefined;
      app.use(redlock("koa-head-left:1"));
      app.use((ctx) => {
        lock = ctx.state.lock;
        // an endless feed (server-sent events): only its reader's leaving stops it
        const feed = new PassThrough();
        feed.write("data: 1\n\n");
        feed.once("close", stopped.open);
        ctx.type = "text/event-stream";
        ctx.body = kind === "Node stream" ? feed : endlessWeb(stopped.open);
        started.open();
      });
      const url = await listen(app);
      const { request } = open(url, { method: "HEAD" });
      request.on("error", () => {});
      await started.opened;
      const outcome = releasedOrExpired("koa-head-left:1", lock as Lock);
      request.destroy();
      await arrival(stopped.opened, "the dropped body stopped");
      expect(await outcome).toBe("expired");
    });
  }
});

/** A web stream that never ends; `onCancel` runs when its reader cancels it. */
function endlessWeb(onCancel: () => void): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("data: 1\n\n"));
    },
    cancel: onCancel,
  });
}
