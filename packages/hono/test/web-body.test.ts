/**
 * A streamed body a locked Hono handler returns after its client left (it awaited something, the
 * client disconnected meanwhile), whose producer has no chunk ready yet and still runs: a `Response`
 * with a `ReadableStream`, and Hono's `stream()` helper. On @hono/node-server, following the Node
 * response (`c.env.outgoing`) and the `Response` alone: the server cancels such a body unsent, and
 * the lock, no longer extended, expires within one ttl; a release would let the next request for
 * the key in beside the producer. (A client that leaves mid-body: streaming.test.ts.)
 */
import { once } from "node:events";
import { type Lock, Redlock } from "@redlock-kit/core";
import { type Context, Hono } from "hono";
import { stream } from "hono/streaming";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { gate, gatedProducer } from "#test-helpers/gate.js";
import { open } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { createRedlockMiddleware, type RedlockEnv } from "../src/index.js";
import { type Served, serveHono } from "./serve.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
const servers: Record<string, Served> = {};

/** The producer of the bodies; the lock of the last request, and when its server saw the client leave. */
let producer = gatedProducer();
let last: { lock: Lock; left: Promise<unknown> };
let entered = gate();
let answer = gate();

const kinds = {
  "a Response with a ReadableStream": () => new Response(producer.produceWeb(false), { status: 201 }),
  "stream()": (c: Context<RedlockEnv>) => stream(c, (s) => s.pipe(producer.produceWeb(false))),
};
type Kind = keyof typeof kinds;

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  // the routes' one attempt at a 1 s lock waits at most its per-instance bound for a new client to say who it is
  await warmUp(dlm);
  // one attempt at a 1 s lock: 500 ms per instance, not the default 100 ms a loaded machine's Redis misses (503)
  const redlock = createRedlockMiddleware(dlm, { ttl: 1000, instanceTimeout: 500 });
  const app = new Hono();
  for (const [index, body] of Object.values(kinds).entries()) {
    app.get(`/${index}/:id`, redlock("late-body:{params.id}"), async (c) => {
      const outgoing = (c.env as { outgoing?: NodeJS.EventEmitter } | undefined)?.outgoing;
      // the server's own sign of the client's leaving, which the middleware follows
      last = { lock: c.var.lock, left: outgoing ? once(outgoing, "close") : aborted(c.req.raw.signal) };
      entered.open();
      await answer.opened;
      return body(c);
    });
  }
  servers["the Node response"] = await serveHono(app);
  servers["the Response alone"] = await serveHono(app, { nodeResponse: false });
});
afterEach(async () => {
  producer.open();
  answer.open();
  await redis.flushall();
});
afterAll(async () => {
  await Promise.all(Object.values(servers).map((server) => server.close()));
  await dlm?.quit();
});

describe.each(["the Node response", "the Response alone"])("following %s", (followed) => {
  it.each(Object.keys(kinds) as Kind[])(
    "%s returned after its client left, its producer still running: the lock expires within one ttl",
    async (kind) => {
      producer = gatedProducer();
      entered = gate();
      answer = gate();
      const { request } = open(`${servers[followed]?.url}/${Object.keys(kinds).indexOf(kind)}/1`);
      request.on("error", () => {});
      await entered.opened;
      const { lock, left } = last;
      request.destroy();
      await left;
      const ended = releasedOrExpired("late-body:1", lock);
      answer.open();
      expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
      expect(producer.state.inside).toBe(1);
    },
  );
});
