/**
 * What the HTTP contract suite does not reach on Hono: the JSON body read for a `{body.…}` key and
 * left for the handler, hooks that return no Response, options refused at declaration, and the Node
 * response followed on @hono/node-server.
 */
import { once } from "node:events";
import type { ServerResponse } from "node:http";
import type { Lock, Redlock } from "@redlock-kit/core";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { gate } from "#test-helpers/gate.js";
import { open, send } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware, type HonoLockHook, type RedlockEnv } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

async function serve(app: Hono) {
  const server = await bed.serve(app);
  return server.url;
}

describe("the Hono middleware", () => {
  it("reads a JSON body for a {body.…} key and leaves it readable by the handler, as JSON and as text", async () => {
    const app = new Hono();
    const redlock = createRedlockMiddleware(bed.dlm);
    app.post("/json", redlock("sku:{body.sku}"), async (c) =>
      c.json({ body: await c.req.json(), key: c.var.lock.resources }),
    );
    app.post("/text", redlock("sku:{body.sku}"), async (c) => c.text(await c.req.text()));
    const url = await serve(app);
    const json = await send(`${url}/json`, { method: "POST", body: { sku: "A-1", n: 2 } });
    expect(json.status).toBe(200);
    expect(JSON.parse(json.text)).toEqual({ body: { sku: "A-1", n: 2 }, key: ["sku:A-1"] });
    const text = await send(`${url}/text`, { method: "POST", body: { sku: "A-2" } });
    expect(text.text).toBe('{"sku":"A-2"}');
  });

  it("answers 400 for a {body.…} key when the body is not JSON or does not parse, without locking", async () => {
    const app = new Hono();
    let ran = 0;
    app.post("/pay", createRedlockMiddleware(bed.dlm)("sku:{body.sku}"), (c) => {
      ran++;
      return c.json({ ok: true });
    });
    const url = await serve(app);
    const answers = [
      await send(`${url}/pay`, { method: "POST", headers: { "content-type": "text/plain" }, body: { sku: "A" } }),
      await send(`${url}/pay`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" }),
      await send(`${url}/pay`, { method: "POST" }),
    ];
    for (const answer of answers) {
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.text)).toEqual({ error: 'Lock key part "body.sku" is missing' });
    }
    expect(ran).toBe(0);
    expect(await bed.redis.dbsize()).toBe(0);
  });

  it("gives key functions a query object whose prototype a ?__proto__=… part cannot change", async () => {
    const app = new Hono();
    const redlock = createRedlockMiddleware(bed.dlm);
    const key = (source: { query: unknown }) => `proto:${Object.getPrototypeOf(source.query) === Object.prototype}`;
    app.get("/q", redlock(key), (c) => c.json(c.var.lock.resources));
    const url = await serve(app);
    const answer = await send(`${url}/q?__proto__=1&__proto__=2`);
    expect(JSON.parse(answer.text)).toEqual(["proto:true"]);
  });

  it("sends the default 423 JSON when an onLocked hook returns no Response", async () => {
    const app = new Hono();
    let called = 0;
    const onLocked = (() => {
      called++;
    }) as unknown as HonoLockHook;
    app.post("/x", createRedlockMiddleware(bed.dlm, { onLocked })("x"), (c) => c.json({ ok: true }));
    const url = await serve(app);
    const holder = await bed.dlm.acquire("x", 10_000);
    try {
      const answer = await send(`${url}/x`, { method: "POST" });
      expect(answer.status).toBe(423);
      expect(JSON.parse(answer.text)).toEqual({ error: "Resource is locked" });
      expect(Number(answer.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      expect(called).toBe(1);
    } finally {
      await holder.release();
    }
  });

  it.each([
    ["the Node response", true],
    ["the Response alone", false],
  ])(
    "following %s, releases the lock of a plain body whose client left while a middleware around the route still ran",
    async (_, nodeResponse) => {
      const app = new Hono<RedlockEnv>();
      const returned = gate();
      let lock!: Lock;
      // still at work once the route returned (a session saved to a store), until its client left
      app.use("/late/*", async (c, next) => {
        await next();
        const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
        const left = outgoing ? once(outgoing, "close") : aborted(c.req.raw.signal);
        returned.open();
        await left;
      });
      app.post("/late/:id", createRedlockMiddleware(bed.dlm, { ttl: 1000 })("late:{params.id}"), (c) => {
        lock = c.var.lock;
        return c.json({ done: true });
      });
      const { url } = await bed.serve(app as unknown as Hono, { nodeResponse });
      const { request } = open(`${url}/late/1`, { method: "POST" });
      request.on("error", () => {});
      await returned.opened;
      const ended = releasedOrExpired("late:1", lock);
      request.destroy();
      // the server ends (Node) or cancels (Fetch) that whole body: the handler is done, nothing still runs
      expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("released");
    },
  );

  it("refuses a bad key or option when the route is declared, naming it", () => {
    const redlock = createRedlockMiddleware(bed.dlm, { wait: 100 });
    expect(() => redlock("x", { autoExtend: "yes" as unknown as boolean })).toThrow(
      new TypeError("options.autoExtend must be a boolean, got string"),
    );
    expect(() => redlock("x:{")).toThrow(TypeError);
    expect(() => createRedlockMiddleware(bed.dlm, { ttl: -1 })).toThrow(RangeError);
    expect(() => createRedlockMiddleware(undefined as unknown as Redlock)).toThrow(
      new TypeError("redlock must be a Redlock instance, got undefined"),
    );
  });
});
