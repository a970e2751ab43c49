/**
 * A streamed body the locked handler set, replaced by a middleware registered before the lock's
 * (after its `await next()`): with a string, with another stream, or wrapped in a transform. Koa
 * sends the replacing body; the handler's stream is destroyed unsent or read into the wrapper. The
 * keep-alive connection stays open for the next request, and the lock is released once the body
 * actually sent has finished.
 */
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { PassThrough, Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import Koa from "koa";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gatedProducer, heldUntilProduced } from "#test-helpers/gate.js";
import { nextChunk, open, send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
let server: http.Server;
let agent: http.Agent;
let port: number;

/** A body larger than a socket takes at once: Koa's res.end() of it has not finished when it returns. */
const large = "x".repeat(8 * 1024 * 1024);

/** How the outer middleware replaces the handler's stream once the chain has settled, and what the client gets. */
const replacements: Record<string, { replace: (handlers: Readable) => unknown; sent: string }> = {
  "a large string": { replace: () => large, sent: large },
  "a large Buffer": { replace: () => Buffer.from(large), sent: large },
  "large JSON": { replace: () => ({ large }), sent: JSON.stringify({ large }) },
  // Koa 2 leaves a replaced stream open: such a middleware destroys it itself
  "another stream, the handler's destroyed": {
    replace: (handlers) => {
      handlers.destroy();
      return Readable.from([large]);
    },
    sent: large,
  },
  "a transform of it": { replace: (handlers) => handlers.pipe(new PassThrough()), sent: "handler's" },
  // small, but the middleware has more to do (a log entry written) before Koa responds
  "a short string, then an awaited step": { replace: () => "replaced", sent: "replaced" },
};

/** The producer of `?gated` requests' bodies, and the handler's stream of a `?fails` request. */
let producer = gatedProducer();
let failing: PassThrough | undefined;

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  const locked = createRedlockMiddleware(dlm, { ttl: 60_000 })("koa-replaced:1");
  // a failed body's lock lapses within its ttl
  // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
  const short = createRedlockMiddleware(dlm, { ttl: 500, instanceTimeout: 300 })("koa-failing:1");
  const app = new Koa();
  // a body that fails mid-way fails Koa's pipeline, which Koa would log
  app.silent = true;
  app.use(async (ctx, next) => {
    await next();
    const replacement = replacements[ctx.query.with as string];
    if (replacement) ctx.body = replacement.replace(ctx.body as Readable);
    if (ctx.query.with === "a short string, then an awaited step") await redis.ping();
  });
  app.use((ctx, next) => (ctx.query.fails === undefined ? locked(ctx, next) : short(ctx, next)));
  app.use((ctx) => {
    ctx.type = "text/plain";
    if (ctx.query.gated !== undefined) ctx.body = producer.produce();
    else if (ctx.query.fails !== undefined) {
      failing = new PassThrough();
      failing.write("first\n");
      ctx.body = failing;
    } else ctx.body = Readable.from(["handler's"]);
  });
  server = http.createServer(app.callback()).listen(0, "127.0.0.1");
  await once(server, "listening");
  port = (server.address() as AddressInfo).port;
});

afterEach(() => {
  agent?.destroy();
});

afterAll(async () => {
  server.close();
  server.closeAllConnections();
  await dlm.quit();
});

/** GET on the keep-alive agent: the answer, and whether it went over the connection of the one before. */
async function get(path: string) {
  const request = http.get({ host: "127.0.0.1", port, path, agent });
  const [response] = (await once(request, "response")) as [http.IncomingMessage];
  const body = await text(response);
  return { status: response.statusCode, body, reusedSocket: request.reusedSocket };
}

describe("a streamed body replaced by a middleware before the lock's", () => {
  for (const [name, { sent }] of Object.entries(replacements)) {
    it(`with ${name}: sends it whole on a keep-alive connection the next request reuses, and the lock is released`, async () => {
      agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const first = await get(`/?with=${encodeURIComponent(name)}`);
      expect({ status: first.status, length: first.body.length }).toEqual({ status: 200, length: sent.length });
      await expect.poll(() => redis.exists("koa-replaced:1")).toBe(0);
      // the same connection answers the next request, which takes the released lock
      const second = await get("/");
      expect({ status: second.status, body: second.body, reusedSocket: second.reusedSocket }).toEqual({
        status: 200,
        body: "handler's",
        reusedSocket: true,
      });
    });
  }
});

describe("a streamed body wrapped in a transform by a middleware before the lock's", () => {
  it("holds the lock while the handler's stream, read through the transform, is produced, and releases it at its end", async () => {
    producer = gatedProducer();
    const url = `http://127.0.0.1:${port}`;
    const answer = send(`${url}/?gated&with=${encodeURIComponent("a transform of it")}`);
    const { text: body } = await heldUntilProduced(
      producer,
      answer,
      () => open(`${url}/?gated`),
      () => redis.exists("koa-replaced:1"),
    );
    expect(body).toBe("first\nlast\n");
  });

  it("closes the connection when the handler's stream fails under it (a .pipe() forwards no error): the lock lapses within one ttl", async () => {
    const { request, response } = open(
      `http://127.0.0.1:${port}/?fails&with=${encodeURIComponent("a transform of it")}`,
    );
    const answer = await response;
    expect(await nextChunk(answer)).toBe("first\n");
    const cut = once(answer, "error").then(() => "cut off");
    failing?.destroy(new Error("export failed"));
    expect(await Promise.race([cut, once(answer, "end").then(() => "ended")])).toBe("cut off");
    request.destroy();
    await expect.poll(() => redis.exists("koa-failing:1")).toBe(0);
  });
});
