import { text } from "node:stream/consumers";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { open, send } from "#test-helpers/http-client.js";
import { countReleases, untilInvalid } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

/** Routes whose handlers answer once their lock (500 ms, not renewed) is no longer valid. */
function lostLockApp() {
  const redlock = createRedlockMiddleware(bed.dlm, { ttl: 500, autoExtend: false });
  const app = new Hono();
  const body = { cancelled: false };
  app.post("/json/:id", redlock("lost:{params.id}"), async (c) => {
    await untilInvalid(c.var.lock);
    return c.json({ done: true }, 200, { etag: '"v1"', "x-kept": "yes" });
  });
  app.post("/own/:id", redlock("lost:{params.id}"), async (c) => {
    await untilInvalid(c.var.lock);
    return c.json({ own: true }, 422);
  });
  app.post("/redirect/:id", redlock("lost:{params.id}"), async (c) => {
    await untilInvalid(c.var.lock);
    return c.redirect("/done", 303);
  });
  app.post("/empty/:id", redlock("lost:{params.id}"), async (c) => {
    await untilInvalid(c.var.lock);
    return c.body(null, 204);
  });
  app.post("/stream/:id", redlock("lost:{params.id}"), async (c) => {
    await untilInvalid(c.var.lock);
    const stream = new ReadableStream<Uint8Array>({
      cancel() {
        body.cancelled = true;
      },
    });
    return new Response(stream);
  });
  return { app, body };
}

describe("a handler that ignores its signal and answers after its lock was lost", () => {
  for (const nodeResponse of [true, false]) {
    const path = nodeResponse ? "Node response" : "Fetch path";

    it(`answers 409 {"error":"Lock was lost"}, not 200, the body's own headers gone (${path}); the lock is released once`, async () => {
      const server = await bed.serve(lostLockApp().app, { nodeResponse });
      const releases = countReleases("lost:1");
      const answer = await send(`${server.url}/json/1`, { method: "POST" });
      expect([answer.status, answer.text]).toEqual([409, '{"error":"Lock was lost"}']);
      expect(answer.headers["content-type"]).toMatch(/^application\/json/);
      expect(answer.headers.etag).toBeUndefined();
      expect(answer.headers["x-kept"]).toBe("yes");
      await expect.poll(() => releases.count).toBe(1);
      releases.stop();
      expect(await bed.redis.exists("lost:1")).toBe(0);
    });

    // a Response without a body is done as soon as it is set on the Fetch path: the lock must be
    // asked whether it was lost before that end releases it
    it(`answers 409 instead of a redirect or a 204, which have no body, without their Location (${path}); released once each`, async () => {
      const server = await bed.serve(lostLockApp().app, { nodeResponse });
      for (const [route, resource] of [
        ["redirect/4", "lost:4"],
        ["empty/5", "lost:5"],
      ] as const) {
        const releases = countReleases(resource);
        const answer = await send(`${server.url}/${route}`, { method: "POST" });
        expect([answer.status, answer.text, answer.headers.location]).toEqual([
          409,
          '{"error":"Lock was lost"}',
          undefined,
        ]);
        await expect.poll(() => releases.count).toBe(1);
        releases.stop();
      }
    });

    it(`keeps its own 422 (${path})`, async () => {
      const server = await bed.serve(lostLockApp().app, { nodeResponse });
      const answer = await send(`${server.url}/own/2`, { method: "POST" });
      expect([answer.status, answer.text]).toEqual([422, '{"own":true}']);
    });

    it(`answers 409 instead of a streamed body and cancels it (${path})`, async () => {
      const { app, body } = lostLockApp();
      const server = await bed.serve(app, { nodeResponse });
      const releases = countReleases("lost:3");
      // opened, not sent: a 200 streamed body that never ends fails on its status, not by the timeout
      const response = await open(`${server.url}/stream/3`, { method: "POST" }).response;
      expect(response.statusCode).toBe(409);
      expect(await text(response)).toBe('{"error":"Lock was lost"}');
      expect(body.cancelled).toBe(true);
      await expect.poll(() => releases.count).toBe(1);
      releases.stop();
    });
  }
});
