import { Hono } from "hono";
import { etag } from "hono/etag";
import { stream } from "hono/streaming";
import { describe, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { open, send } from "#test-helpers/http-client.js";
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
  return { app, producer, state };
}

for (const nodeResponse of [true, false]) {
  describe(`HEAD on a locked GET route (${nodeResponse ? "Node response" : "Fetch path"})`, () => {
    it("keeps the lock while the dropped stream() body's producer runs, and releases it at the stream's end", async () => {
      const { app, producer, state } = streamedApp(false);
      const server = await bed.serve(app, { nodeResponse });
      let get: ReturnType<typeof open> | undefined;
      try {
        const head = await send(`${server.url}/export/1`, { method: "HEAD" });
        expect(head.status).toBe(200);
        expect(state.inside).toBe(1);
        // the producer still runs: the next request for the key is refused and never enters
        get = open(`${server.url}/export/1`);
        expect((await get.response).statusCode).toBe(423);
        expect(state).toEqual({ runs: 1, inside: 1, maxInside: 1 });
        expect(await bed.redis.exists("hono-head:1")).toBe(1);
        producer.open();
        // released by the stream's end, not expired: the ttl (60 s) is far beyond the poll's 10 s
        await expect.poll(() => bed.redis.exists("hono-head:1")).toBe(0);
        expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        producer.open();
        get?.request.destroy();
      }
    });

    it("leaves the body to an outer etag(), which hashes it, and still releases at the stream's end", async () => {
      const { app, producer, state } = streamedApp(true);
      const server = await bed.serve(app, { nodeResponse });
      try {
        // etag() reads the whole body before answering: the HEAD response waits for the producer
        const head = send(`${server.url}/export/1`, { method: "HEAD" });
        await expect.poll(() => state.inside).toBe(1);
        expect((await send(`${server.url}/export/1`)).status).toBe(423);
        producer.open();
        const answer = await head;
        expect(answer.status).toBe(200);
        expect(answer.headers.etag).toBeDefined();
        await expect.poll(() => bed.redis.exists("hono-head:1")).toBe(0);
        // a conditional HEAD: etag() cancels the body it has hashed, answering 304
        const again = await send(`${server.url}/export/1`, {
          method: "HEAD",
          headers: { "if-none-match": answer.headers.etag as string },
        });
        expect(again.status).toBe(304);
        await expect.poll(() => bed.redis.exists("hono-head:1")).toBe(0);
        expect(state).toEqual({ runs: 2, inside: 0, maxInside: 1 });
      } finally {
        producer.open();
      }
    });

    it("releases the lock of a JSON body at once", async () => {
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 60_000 });
      const app = new Hono();
      app.get("/order/:id", redlock("hono-head-json:{params.id}"), (c) => c.json({ id: c.req.param("id") }));
      const server = await bed.serve(app, { nodeResponse });
      const head = await send(`${server.url}/order/1`, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers["content-type"]).toMatch(/json/);
      await expect.poll(() => bed.redis.exists("hono-head-json:1")).toBe(0);
    });
  });
}
