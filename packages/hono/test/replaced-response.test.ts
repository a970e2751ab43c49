/**
 * A middleware around a locked route that puts another answer in place of the route's after
 * `await next()` (an app-wide error page, Hono's `trimTrailingSlash()` redirect), or re-wraps it
 * with headers of its own. Off the Node response (Bun, Deno, a worker) the middleware follows the
 * `Response`: the body it followed, replaced and never read, used to keep the lock, extended, until
 * `maxHoldMs`. The lock is released once the answer sent has been read; a body only re-wrapped is
 * still followed to its end.
 */
import { Hono } from "hono";
import { stream } from "hono/streaming";
import { describe, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { nextChunk, open, send } from "#test-helpers/http-client.js";
import { arrival, nextExtensions, nextRelease } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

for (const nodeResponse of [true, false]) {
  const path = nodeResponse ? "Node response" : "Fetch path";
  describe(`an answer replaced by a middleware around the route (${path})`, () => {
    it("releases the lock once an app-wide error page sent in place of the route's 404 has been sent", async () => {
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 1000 });
      const app = new Hono();
      app.use(async (c, next) => {
        await next();
        if (c.res.status === 404) c.res = c.html("<h1>Not here</h1>", 404);
      });
      let ran = 0;
      app.get("/orders/:id", redlock("order:{params.id}"), (c) => {
        ran++;
        return c.json({ error: "no such order" }, 404);
      });
      const server = await bed.serve(app, { nodeResponse });
      const released = nextRelease("order:1").then(() => "released");
      const first = await send(`${server.url}/orders/1`);
      expect([first.status, first.text]).toEqual([404, "<h1>Not here</h1>"]);
      const extended = nextExtensions("order:1", 3, { succeeded: true });
      const outcome = await arrival(
        Promise.race([released, extended.then(() => "extended 3 times after the answer was sent")]),
        "the lock's release",
      );
      extended.stop();
      expect(outcome).toBe("released");
      const second = await send(`${server.url}/orders/1`);
      expect({ status: second.status, ran }).toEqual({ status: 404, ran: 2 });
    });

    it("releases both locks of a route inside a guard on another key, the error page set around both", async () => {
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 1000 });
      const app = new Hono();
      app.use(async (c, next) => {
        await next();
        if (c.res.status === 404) c.res = c.html("<h1>Not here</h1>", 404);
      });
      app.use("/shops/:shop/*", redlock("shop:{params.shop}"));
      app.get("/shops/:shop/orders/:id", redlock("order:{params.id}"), (c) => c.json({ error: "no such order" }, 404));
      const server = await bed.serve(app, { nodeResponse });
      const released = Promise.all([nextRelease("shop:1"), nextRelease("order:2")]);
      const answer = await send(`${server.url}/shops/1/orders/2`);
      expect([answer.status, answer.text]).toEqual([404, "<h1>Not here</h1>"]);
      const [shop, order] = await arrival(released, "the locks' releases");
      expect([shop.released, order.released]).toEqual([true, true]);
    });

    it("releases it too when that middleware clears c.res first (no headers merged)", async () => {
      const app = new Hono();
      app.use(async (c, next) => {
        await next();
        c.res = undefined;
        c.res = new Response("replaced");
      });
      app.post("/r/:id", createRedlockMiddleware(bed.dlm)("r:{params.id}"), (c) => c.json({ ok: true }));
      const server = await bed.serve(app, { nodeResponse });
      const released = nextRelease("r:1");
      const answer = await send(`${server.url}/r/1`, { method: "POST" });
      expect(answer.text).toBe("replaced");
      // a lock left held (maxHoldMs is 60 s) fails as never released
      expect((await arrival(released, "the lock's release")).released).toBe(true);
      expect(await bed.redis.get("r:1")).toBeNull();
    });

    it("releases the lock of a replaced stream() body once the redirect sent instead has gone out", async () => {
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 1000 });
      const app = new Hono();
      const aborted = gate();
      // moved: every answer under /old/ goes out as a redirect (as trimTrailingSlash() does)
      app.use("/old/*", async (c, next) => {
        await next();
        c.res = c.redirect(c.req.path.replace("/old/", "/new/"), 301);
      });
      app.get("/old/:id", redlock("moved:{params.id}"), (c) =>
        stream(c, async (out) => {
          out.onAbort(() => aborted.open());
          await out.write("never sent\n");
        }),
      );
      const server = await bed.serve(app, { nodeResponse });
      const released = nextRelease("moved:1");
      const answer = await send(`${server.url}/old/1`);
      expect([answer.status, answer.headers.location]).toEqual([301, "/new/1"]);
      expect((await arrival(released, "the lock's release")).released).toBe(true);
      // off the Node response the body left unsent is cancelled: its producer is told
      if (!nodeResponse) await arrival(aborted.opened, "the stream's abort");
    });

    it("keeps the lock of a streamed body re-wrapped with headers of its own until that body has been sent", async () => {
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 1000 });
      const app = new Hono();
      app.use(async (c, next) => {
        await next();
        c.res = new Response(c.res.body, c.res);
        c.res.headers.set("x-served-by", "edge");
      });
      const producer = gate();
      app.get("/export/:id", redlock("export:{params.id}"), (c) =>
        stream(c, async (out) => {
          await out.write("first\n");
          await producer.opened;
          await out.write("last\n");
        }),
      );
      const server = await bed.serve(app, { nodeResponse });
      const { request, response } = open(`${server.url}/export/1`);
      try {
        const answer = await response;
        expect(answer.headers["x-served-by"]).toBe("edge");
        expect(await nextChunk(answer)).toBe("first\n");
        // still followed through the same body: neither released nor given up on while it streams
        const renewed = await arrival(nextExtensions("export:1", 2, { succeeded: true }), "two renewals");
        expect(renewed).toHaveLength(2);
        const released = nextRelease("export:1");
        producer.open();
        expect(await nextChunk(answer)).toBe("last\n");
        answer.resume();
        expect((await arrival(released, "the lock's release")).released).toBe(true);
      } finally {
        producer.open();
        request.destroy();
      }
    });
  });
}
