import { text } from "node:stream/consumers";
import { Redlock } from "@redlock-kit/core";
import { Hono } from "hono";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { open, send } from "#test-helpers/http-client.js";
import { countReleases, untilInvalid } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";
import { serveHono } from "./serve.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
const servers: Awaited<ReturnType<typeof serveHono>>[] = [];
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
  await redis.flushall();
});
afterAll(async () => {
  await dlm.quit();
});

/** Routes whose handlers answer once their lock (500 ms, not renewed) is no longer valid. */
function lostLockApp() {
  const redlock = createRedlockMiddleware(dlm, { ttl: 500, autoExtend: false });
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
      const server = await serveHono(lostLockApp().app, { nodeResponse });
      servers.push(server);
      const releases = countReleases("lost:1");
      const answer = await send(`${server.url}/json/1`, { method: "POST" });
      expect([answer.status, answer.text]).toEqual([409, '{"error":"Lock was lost"}']);
      expect(answer.headers["content-type"]).toMatch(/^application\/json/);
      expect(answer.headers.etag).toBeUndefined();
      expect(answer.headers["x-kept"]).toBe("yes");
      await expect.poll(() => releases.count).toBe(1);
      releases.stop();
      expect(await redis.exists("lost:1")).toBe(0);
    });

    // a Response without a body is done as soon as it is set on the Fetch path: the lock must be
    // asked whether it was lost before that end releases it
    it(`answers 409 instead of a redirect or a 204, which have no body, without their Location (${path}); released once each`, async () => {
      const server = await serveHono(lostLockApp().app, { nodeResponse });
      servers.push(server);
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
      const server = await serveHono(lostLockApp().app, { nodeResponse });
      servers.push(server);
      const answer = await send(`${server.url}/own/2`, { method: "POST" });
      expect([answer.status, answer.text]).toEqual([422, '{"own":true}']);
    });

    it(`answers 409 instead of a streamed body and cancels it (${path})`, async () => {
      const { app, body } = lostLockApp();
      const server = await serveHono(app, { nodeResponse });
      servers.push(server);
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
