import type { Lock } from "@redlock-kit/core";
import { Hono } from "hono";
import { etag } from "hono/etag";
import { stream } from "hono/streaming";
import { describe, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { open, send } from "#test-helpers/http-client.js";
import { arrival, nextExtensions, releasedOrExpired } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

/** A locked GET route whose body a `stream()` callback writes until the gate opens. */
function streamedApp(withEtag: boolean) {
  const redlock = createRedlockMiddleware(bed.dlm, { ttl: 60_000 });
  const app = new Hono();
  const producer = gate();
  const state = { runs: 0, inside: 0, maxInside: 0 };
  // outside the lock, it reads a copy of the body (HEAD included) to hash it
  if (withEtag) app.use(etag());
  app.get("/export/:id", redlock("hono-head:{params.id}"), (c) => {
    state.runs++;
    state.maxInside = Math.max(state.maxInside, ++state.inside);
    return stream(c, async (out) => {
      await out.write("first\n");
      await producer.opened;
      state.inside--;
      await out.write("last\n");
    });
  });
  app.get("/order/:id", redlock("hono-head-json:{params.id}"), (c) => c.json({ id: c.req.param("id") }));
  return { app, producer, state };
}

for (const nodeResponse of [true, false]) {
  describe(`HEAD on a locked GET route (${nodeResponse ? "Node response" : "Fetch path"})`, () => {
    it("keeps the lock while the dropped stream() body's producer runs, and answers and releases it at the stream's end", async () => {
      const { app, producer, state } = streamedApp(false);
      const server = await bed.serve(app, { nodeResponse });
      let get: ReturnType<typeof open> | undefined;
      try {
        // the answer waits for the body's end, as a GET's does
        const head = send(`${server.url}/export/1`, { method: "HEAD" });
        await expect.poll(() => state.inside).toBe(1);
        // the producer still runs: the next request for the key is refused and never enters
        get = open(`${server.url}/export/1`);
        expect((await get.response).statusCode).toBe(423);
        expect(state).toEqual({ runs: 1, inside: 1, maxInside: 1 });
        expect(await bed.redis.exists("hono-head:1")).toBe(1);
        producer.open();
        expect((await head).status).toBe(200);
        // released by the stream's end, not expired: the ttl (60 s) is far beyond the poll's 10 s
        await expect.poll(() => bed.redis.exists("hono-head:1")).toBe(0);
        expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        producer.open();
        get?.request.destroy();
      }
    });

    it("stops an endless stream() body once its client leaves, and lets the lock lapse rather than extending it", async () => {
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 1000 });
      const app = new Hono();
      let lock: Lock | undefined;
      const writing = gate();
      const stopped = gate();
      // an event feed: it ends only when its stream is aborted
      app.get("/feed", redlock("hono-feed"), (c) => {
        lock = c.var.lock;
        return stream(c, async (out) => {
          while (!out.aborted) {
            await out.write("event\n");
            writing.open();
            await out.sleep(20);
          }
          stopped.open();
        });
      });
      const server = await bed.serve(app, { nodeResponse });
      const { request } = open(`${server.url}/feed`, { method: "HEAD" });
      request.on("error", () => {});
      // the body is being drained: no answer yet
      await writing.opened;
      const outcome = releasedOrExpired("hono-feed", lock as Lock);
      const extended = nextExtensions("hono-feed", 3, { succeeded: true });
      request.destroy();
      await arrival(stopped.opened, "the feed's stop");
      // before: the HEAD answer went out at once, and the body was read, the lock extended, until maxHoldMs
      const ended = await arrival(
        Promise.race([outcome, extended.then(() => "extended 3 times after its client left")]),
        "the lock's end (expiry or release)",
      );
      extended.stop();
      // a release would let the next request in beside a producer that may still run
      expect(ended).toBe("expired");
    });

    it("gives an outer etag() no streamed body to hash: its producer's bytes are drained, not kept", async () => {
      const { app, producer, state } = streamedApp(true);
      const server = await bed.serve(app, { nodeResponse });
      try {
        const head = send(`${server.url}/export/1`, { method: "HEAD" });
        await expect.poll(() => state.inside).toBe(1);
        expect((await send(`${server.url}/export/1`)).status).toBe(423);
        producer.open();
        const answer = await head;
        expect(answer.status).toBe(200);
        // a value known only once the whole body is made: a HEAD may go without it (RFC 9110, 9.3.2)
        expect(answer.headers.etag).toBeUndefined();
        await expect.poll(() => bed.redis.exists("hono-head:1")).toBe(0);
        expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        producer.open();
      }
    });

    it("keeps a whole body for an outer etag(): the GET's ETag, and a 304 for a conditional HEAD", async () => {
      const { app } = streamedApp(true);
      const server = await bed.serve(app, { nodeResponse });
      const get = await send(`${server.url}/order/1`);
      const head = await send(`${server.url}/order/1`, { method: "HEAD" });
      expect([head.status, head.headers.etag]).toEqual([200, get.headers.etag]);
      expect(head.headers.etag).toBeDefined();
      await expect.poll(() => bed.redis.exists("hono-head-json:1")).toBe(0);
      // etag() cancels the body it has hashed, answering 304
      const again = await send(`${server.url}/order/1`, {
        method: "HEAD",
        headers: { "if-none-match": head.headers.etag as string },
      });
      expect(again.status).toBe(304);
      await expect.poll(() => bed.redis.exists("hono-head-json:1")).toBe(0);
    });

    it("releases the lock of a JSON body at once", async () => {
      const { app } = streamedApp(false);
      const server = await bed.serve(app, { nodeResponse });
      const head = await send(`${server.url}/order/1`, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers["content-type"]).toMatch(/json/);
      await expect.poll(() => bed.redis.exists("hono-head-json:1")).toBe(0);
    });
  });
}
