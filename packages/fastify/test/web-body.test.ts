/**
 * Web bodies (a `ReadableStream` payload, a `Response` with one) on a locked Fastify route. Once the
 * client has left, Fastify cancels such a stream and then ends the response itself, while the
 * stream's producer may still run: that end is not the handler's, and the lock, no longer extended,
 * expires within one ttl, as for a Node stream whose reader left.
 */
import { once } from "node:events";
import type { ServerResponse } from "node:http";
import { text } from "node:stream/consumers";
import { type Lock, Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gate, gatedProducer } from "#test-helpers/gate.js";
import { nextChunk, open } from "#test-helpers/http-client.js";
import { arrival, nextRelease, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import redlockPlugin from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
let app: FastifyInstance;
let url: string;

/** The producer of the bodies, the lock and Node response of the last request, what it waits for. */
let producer = gatedProducer();
let last: { lock: Lock; raw: ServerResponse };
let entered = gate();
let answer = gate();

const kinds = {
  "a ReadableStream": (writesFirst: boolean) => producer.produceWeb(writesFirst),
  "a Response with a ReadableStream": (writesFirst: boolean) =>
    new Response(producer.produceWeb(writesFirst), {
      status: 201,
      headers: { "x-kind": "response" },
    }),
};
type Kind = keyof typeof kinds;

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  // the routes' one attempt at a 1 s lock waits 100 ms for a new client to say who it is
  await warmUp(dlm);
  app = Fastify();
  await app.register(redlockPlugin, { redlock: dlm, ttl: 1000 });
  for (const [index, body] of Object.values(kinds).entries()) {
    app.get(`/${index}/:id`, { config: { redlock: "web-body:{params.id}" } }, async (request, reply) => {
      last = { lock: request.lock as Lock, raw: reply.raw };
      entered.open();
      const late = (request.query as { late?: string }).late !== undefined;
      if (late) await answer.opened;
      // a late body has no chunk ready (its producer still prepares it): Fastify's first read waits
      return reply.send(body(!late));
    });
  }
  await app.listen({ port: 0, host: "127.0.0.1" });
  url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});
afterEach(async () => {
  producer.open();
  answer.open();
  await redis.flushall();
});
afterAll(async () => {
  await app?.close();
  await dlm?.quit();
});

const path = (kind: Kind, id: string) => `${url}/${Object.keys(kinds).indexOf(kind)}/${id}`;

describe.each(Object.keys(kinds) as Kind[])("%s", (kind) => {
  it("is sent as Fastify sends it, and the lock released once it has ended", async () => {
    producer = gatedProducer();
    const response = await open(path(kind, "1")).response;
    expect(await nextChunk(response)).toBe("first\n");
    expect(await redis.exists("web-body:1")).toBe(1);
    const released = nextRelease("web-body:1");
    producer.open();
    expect(await text(response)).toBe("last\n");
    expect(response.statusCode).toBe(kind === "a ReadableStream" ? 200 : 201);
    expect(response.headers["x-kind"]).toBe(kind === "a ReadableStream" ? undefined : "response");
    expect((await arrival(released, "the lock's release")).released).toBe(true);
  });

  it("keeps the lock when the client leaves mid-body while its producer still runs: it expires within one ttl", async () => {
    producer = gatedProducer();
    const { request, response } = open(path(kind, "2"));
    request.on("error", () => {});
    expect(await nextChunk(await response)).toBe("first\n");
    const ended = releasedOrExpired("web-body:2", last.lock);
    request.destroy();
    // Fastify cancels the stream and ends the response: a release then would let the next request in
    // beside the producer (before: "released")
    expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
    expect(producer.state.inside).toBe(1);
    await expect.poll(() => redis.exists("web-body:2")).toBe(0);
  });

  it("keeps the lock of a body returned after its client left, while its producer still runs", async () => {
    producer = gatedProducer();
    entered = gate();
    answer = gate();
    const { request } = open(`${path(kind, "3")}?late`);
    request.on("error", () => {});
    await entered.opened;
    const closed = once(last.raw, "close");
    request.destroy();
    await closed;
    const ended = releasedOrExpired("web-body:3", last.lock);
    answer.open();
    expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
    expect(producer.state.inside).toBe(1);
  });
});
