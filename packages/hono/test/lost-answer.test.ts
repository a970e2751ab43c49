import type { ServerResponse } from "node:http";
import { text } from "node:stream/consumers";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { Hono } from "hono";
import { cors } from "hono/cors";
import { describe, expect, it } from "vitest";
import { open, send } from "#test-helpers/http-client.js";
import { countReleases, untilInvalid } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware, type RedlockEnv } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

/**
 * A route's one attempt at a 500 ms lock: the default per-instance timeout (50 ms) would answer 503
 * whenever Redis answers slowly on a loaded machine; 300 ms still leaves the lock valid for a while.
 */
const SHORT_LOCK = { ttl: 500, instanceTimeout: 300, autoExtend: false };

/** Routes whose handlers answer once their lock (500 ms, not renewed) is no longer valid. */
function lostLockApp() {
  const redlock = createRedlockMiddleware(bed.dlm, SHORT_LOCK);
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

/**
 * On @hono/node-server the answer is committed when the server writes the Node response's head:
 * after the middleware around the route have run, or earlier by a handler that writes to
 * `c.env.outgoing` itself and returns `RESPONSE_ALREADY_SENT`. A lock lost before that commit gets
 * the 409; one lost after it leaves the answer as it was started.
 */
const LOST = '{"error":"Lock was lost"}';

describe("on the Node response, a lock lost before the answer is committed", () => {
  function committedApp() {
    const redlock = createRedlockMiddleware(bed.dlm, SHORT_LOCK);
    const app = new Hono<RedlockEnv>();
    // an outer step still at work once the route's chain returned (a session saved to a store)
    app.use("/outer/*", async (c, next) => {
      await next();
      await untilInvalid(c.var.lock);
    });
    app.post("/outer/:id", redlock("lost:{params.id}"), (c) => c.json({ done: true }));
    // cors() before the route sets its headers before next(); the lock is lost after the route
    // returned, while the outer step (a session saved to a store) still runs
    app.use("/cors/*", cors({ origin: "https://shop.example" }), async (c, next) => {
      await next();
      await untilInvalid(c.var.lock);
    });
    app.post("/cors/:id", redlock("lost:{params.id}"), (c) =>
      c.json({ done: true }, 200, { etag: '"v1"', "x-kept": "yes" }),
    );
    app.post("/direct/:id", redlock("lost:{params.id}"), async (c) => {
      await untilInvalid(c.var.lock);
      const outgoing = (c.env as { outgoing: ServerResponse }).outgoing;
      outgoing.writeHead(200, { "content-type": "text/plain", "x-dropped": "yes" });
      outgoing.end("done");
      return RESPONSE_ALREADY_SENT;
    });
    app.post("/started/:id", redlock("lost:{params.id}"), async (c) => {
      const outgoing = (c.env as { outgoing: ServerResponse }).outgoing;
      outgoing.writeHead(200, { "content-type": "text/plain" });
      outgoing.write("part;");
      await untilInvalid(c.var.lock);
      // ended once the server has taken the returned Response (the microtasks after the return)
      setImmediate(() => outgoing.end("done"));
      return RESPONSE_ALREADY_SENT;
    });
    return app;
  }

  it.each([
    ["answers 409, not 200, when it was lost while a middleware around the route still ran", "outer/6", 409, LOST],
    [
      "answers 409 instead of a handler's own write to c.env.outgoing (RESPONSE_ALREADY_SENT) after it was lost",
      "direct/7",
      409,
      LOST,
    ],
    [
      "leaves an answer the handler started on c.env.outgoing before it was lost whole, no error written into it",
      "started/8",
      200,
      "part;done",
    ],
  ] as const)("%s; released once", async (_, route, status, body) => {
    const server = await bed.serve(committedApp() as unknown as Hono);
    const releases = countReleases(`lost:${route.split("/")[1]}`);
    const answer = await send(`${server.url}/${route}`, { method: "POST" });
    expect([answer.status, answer.text]).toEqual([status, body]);
    await expect.poll(() => releases.count).toBe(1);
    releases.stop();
  });

  it("keeps on that 409 the headers of the answer the server was writing, cors()'s before the route included, but those describing its body (as the check at the route's return does); released once", async () => {
    const server = await bed.serve(committedApp() as unknown as Hono);
    const releases = countReleases("lost:9");
    const answer = await send(`${server.url}/cors/9`, { method: "POST", headers: { origin: "https://shop.example" } });
    expect([answer.status, answer.text]).toEqual([409, LOST]);
    expect(answer.headers["content-type"]).toMatch(/^application\/json/);
    expect(answer.headers["cache-control"]).toBe("no-store");
    expect([answer.headers["access-control-allow-origin"], answer.headers["x-kept"], answer.headers.etag]).toEqual([
      "https://shop.example",
      "yes",
      undefined,
    ]);
    await expect.poll(() => releases.count).toBe(1);
    releases.stop();
  });

  it("drops the headers of a handler's own writeHead on c.env.outgoing (RESPONSE_ALREADY_SENT) after its lock was lost, as on Express", async () => {
    const server = await bed.serve(committedApp() as unknown as Hono);
    const answer = await send(`${server.url}/direct/10`, { method: "POST" });
    expect([answer.status, answer.text, answer.headers["x-dropped"]]).toEqual([409, LOST, undefined]);
  });
});
