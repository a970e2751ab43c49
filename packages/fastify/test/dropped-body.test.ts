/**
 * Streamed payloads Fastify drops while their producer goes on as for a 200: a HEAD request's (the
 * HEAD twin of a GET route), and a 204's, which Fastify ends at once. The lock waits for the
 * stream's end, and so does the answer, as a 200's does: a client that leaves meanwhile is seen.
 */
import { PassThrough, Readable } from "node:stream";
import type { Lock } from "@redlock-kit/core";
import type { FastifyInstance } from "fastify";
import { describe, expect, it } from "vitest";
import { gate, gatedProducer, heldUntilProduced } from "#test-helpers/gate.js";
import { open, type RequestInit, send } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
import redlockPlugin from "../src/index.js";
import { useFastifyRedlock } from "./bed.js";

const bed = useFastifyRedlock();

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
  const app = bed.app();
  await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 60_000 });
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
    () => bed.redis.exists("fastify-dropped:1"),
  );
}

describe("HEAD on a locked GET route (Fastify's HEAD twin)", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      expect((await droppedWhileProducing(kind, "HEAD")).status).toBe(200);
    });
  }

  it("releases the lock of a JSON body at once", async () => {
    const app = bed.app();
    await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 60_000 });
    app.get("/order/:id", { config: { redlock: "fastify-head-json:{params.id}" } }, async () => ({ id: 1 }));
    const url = await listen(app);
    const head = await send(`${url}/order/1`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toMatch(/json/);
    await expect.poll(() => bed.redis.exists("fastify-head-json:1")).toBe(0);
  });
});

describe("a 204 with a streamed payload", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`keeps the lock while the dropped ${kind}'s producer runs, and releases it at the stream's end`, async () => {
      expect((await droppedWhileProducing(kind, "GET", 204)).status).toBe(204);
    });
  }
});

describe("a HEAD request, or a 204, whose client leaves while its dropped body is read", () => {
  const cases = [
    ["HEAD", 200, "Node stream"],
    ["HEAD", 200, "web stream"],
    ["GET", 204, "Node stream"],
    ["GET", 204, "web stream"],
  ] as const;
  for (const [method, status, kind] of cases) {
    it(`${method} ${status}: stops the ${kind}, as Fastify stops a GET's body whose client left, and the lock lapses within one ttl`, async () => {
      const app = bed.app();
      // extended until maxHoldMs, the lock would outlive the polls: only its expiry within a ttl passes
      // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
      await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 500, instanceTimeout: 300, maxHoldMs: 600_000 });
      const read = gate();
      const stopped = gate();
      let lock: Lock | undefined;
      app.get("/feed/:id", { config: { redlock: "fastify-head-left:{params.id}" } }, async (request, reply) => {
        lock = request.lock as Lock;
        return reply
          .code(status)
          .type("text/event-stream")
          .send(endlessFeed(kind, read.open, stopped.open));
      });
      const { request } = open(`${await listen(app)}/feed/1`, { method });
      request.on("error", () => {});
      // the body is being drained: Fastify has handed on the payload (and answered, if it does so at once)
      await read.opened;
      const outcome = releasedOrExpired("fastify-head-left:1", lock as Lock);
      request.destroy();
      // a release would let the next request in beside the producer, which may still run
      expect(await arrival(outcome, "the lock's end (expiry or release)")).toBe("expired");
      await arrival(stopped.opened, "the dropped body stopped");
    });
  }
});

/**
 * An endless feed (server-sent events) of `kind`: `onRead` runs once a reader has started on it,
 * `onStop` once it is destroyed (a web one cancelled); only its reader's leaving stops it.
 */
function endlessFeed(kind: Kind, onRead: () => void, onStop: () => void): PassThrough | ReadableStream<Uint8Array> {
  if (kind === "web stream") {
    return new ReadableStream<Uint8Array>({
      start: (controller) => controller.enqueue(new TextEncoder().encode("data: 1\n\n")),
      // asked for more once its first chunk was read
      pull: onRead,
      cancel: onStop,
    });
  }
  const feed = new PassThrough();
  feed.write("data: 1\n\n");
  feed.once("resume", onRead);
  feed.once("close", onStop);
  return feed;
}
