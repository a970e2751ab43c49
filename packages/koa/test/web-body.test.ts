/**
 * Web bodies (Koa 3: a `ReadableStream`, a `Response` with one) on a locked Koa route whose client
 * leaves while their producer still runs: mid-body, or before Koa wrote the body (the handler set it
 * after the client left, its producer with no chunk ready yet). The lock, no longer extended,
 * expires within one ttl, as for a Node stream whose reader left; a release would let the next
 * request for the key in beside the producer. A Blob is whole: its lock is released at once.
 */
import { once } from "node:events";
import http, { type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { text } from "node:stream/consumers";
import { Router } from "@koa/router";
import { type Lock, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import Koa from "koa";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gate, gatedProducer } from "#test-helpers/gate.js";
import { nextChunk, open } from "#test-helpers/http-client.js";
import { arrival, nextRelease, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
let server: http.Server;
let url: string;

/** The producer of the bodies, the lock and Node response of the last request, what it waits for. */
let producer = gatedProducer();
let last: { lock: Lock; res: ServerResponse };
let entered = gate();
let answer = gate();

const kinds = {
  "a ReadableStream": (writesFirst: boolean) => producer.produceWeb(writesFirst),
  "a Response with a ReadableStream": (writesFirst: boolean) =>
    new Response(producer.produceWeb(writesFirst), { status: 201, headers: { "x-kind": "response" } }),
};
type Kind = keyof typeof kinds;

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  // the routes' one attempt at a 1 s lock waits at most its per-instance bound for a new client to say who it is
  await warmUp(dlm);
  // one attempt at a 1 s lock: 500 ms per instance, not the default 100 ms a loaded machine's Redis misses (503)
  const redlock = createRedlockMiddleware(dlm, { ttl: 1000, instanceTimeout: 500 });
  const app = new Koa();
  // a client that leaves mid-body fails Koa's pipeline ("Premature close"), which Koa would log
  app.silent = true;
  const router = new Router();
  for (const [index, body] of Object.values(kinds).entries()) {
    router.get(`/${index}/:id`, redlock("koa-web:{params.id}"), async (ctx) => {
      last = { lock: ctx.state.lock as Lock, res: ctx.res };
      entered.open();
      const late = ctx.query.late !== undefined;
      if (late) await answer.opened;
      // a late body has no chunk ready (its producer still prepares it)
      ctx.body = body(!late);
    });
  }
  router.get("/blob/:id", redlock("koa-web:{params.id}"), async (ctx) => {
    last = { lock: ctx.state.lock as Lock, res: ctx.res };
    entered.open();
    await answer.opened;
    ctx.body = new Blob(["whole\n"]);
  });
  app.use(router.routes());
  server = http.createServer(app.callback()).listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterEach(async () => {
  producer.open();
  answer.open();
  await redis.flushall();
});
afterAll(async () => {
  server?.close();
  server?.closeAllConnections();
  await dlm?.quit();
});

const path = (kind: Kind, id: string) => `${url}/${Object.keys(kinds).indexOf(kind)}/${id}`;

describe.each(Object.keys(kinds) as Kind[])("%s", (kind) => {
  it("is sent as Koa sends it, and the lock released once it has ended", async () => {
    producer = gatedProducer();
    const response = await open(path(kind, "1")).response;
    expect(await nextChunk(response)).toBe("first\n");
    expect(await redis.exists("koa-web:1")).toBe(1);
    const released = nextRelease("koa-web:1");
    producer.open();
    expect(await text(response)).toBe("last\n");
    expect(response.statusCode).toBe(kind === "a ReadableStream" ? 200 : 201);
    expect((await arrival(released, "the lock's release")).released).toBe(true);
  });

  it("keeps the lock when the client leaves mid-body while its producer still runs: it expires within one ttl", async () => {
    producer = gatedProducer();
    const { request, response } = open(path(kind, "2"));
    request.on("error", () => {});
    expect(await nextChunk(await response)).toBe("first\n");
    const ended = releasedOrExpired("koa-web:2", last.lock);
    request.destroy();
    expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
    expect(producer.state.inside).toBe(1);
    await expect.poll(() => redis.exists("koa-web:2")).toBe(0);
  });

  it("keeps the lock of a body set after its client left, while its producer still runs", async () => {
    producer = gatedProducer();
    entered = gate();
    answer = gate();
    const { request } = open(`${path(kind, "3")}?late`);
    request.on("error", () => {});
    await entered.opened;
    const closed = once(last.res, "close");
    request.destroy();
    await closed;
    const ended = releasedOrExpired("koa-web:3", last.lock);
    answer.open();
    expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
    expect(producer.state.inside).toBe(1);
  });
});

it("releases at once the lock of a Blob set after its client left: that body is whole, nothing produces it", async () => {
  entered = gate();
  answer = gate();
  const { request } = open(`${url}/blob/4`);
  request.on("error", () => {});
  await entered.opened;
  const closed = once(last.res, "close");
  request.destroy();
  await closed;
  const ended = releasedOrExpired("koa-web:4", last.lock);
  answer.open();
  expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("released");
});
