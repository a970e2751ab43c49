import { type HttpKeySource, LockUnavailableError, Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { lazyQuery } from "#test-helpers/lazy-query.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { OWN_ANSWER, SET_UP, setUpHeaders } from "#test-helpers/set-up-headers.js";
import redlockPlugin, { redlockPlugin as namedPlugin } from "../src/index.js";

const cluster = useRedisServers(1);
let dlm: Redlock;
const apps: FastifyInstance[] = [];

beforeAll(() => {
  dlm = new Redlock(cluster.servers.map((server) => server.client()));
});

afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
  await cluster.servers[0]?.client().flushall();
});

afterAll(async () => {
  await dlm.quit();
});

async function appWithPlugin() {
  const app = Fastify();
  apps.push(app);
  await app.register(redlockPlugin, { redlock: dlm, ttl: 2000 });
  return app;
}

const ok = async () => ({ ok: true });

describe("the Fastify plugin", () => {
  it("is one plugin under its default and named export, and decorates app.redlock", async () => {
    expect(namedPlugin).toBe(redlockPlugin);
    const app = await appWithPlugin();
    expect(app.redlock).toBe(dlm);
    app.get("/free", async (request) => ({ lock: request.lock }));
    expect((await app.inject({ url: "/free" })).json()).toEqual({ lock: null });
  });

  it.each([
    [42, /^config\.redlock of POST \/bad: must be a key template, a key function or an object with a key, got number$/],
    [{ ttl: 500 }, /^config\.redlock of POST \/bad: must be a key template.*got object$/],
    [{ key: "order:{params.id}", ttl: 0 }, /^config\.redlock of POST \/bad: options\.ttl must be a positive integer/],
    [{ key: "order:{params.id}", wait: -1 }, /^config\.redlock of POST \/bad: options\.wait must be an integer/],
    [
      "order:{params.id",
      /^config\.redlock of POST \/bad: key template "order:\{params\.id" has a malformed placeholder/,
    ],
  ])("fails when the route is registered, not per request, for config.redlock %j", async (config, message) => {
    const app = await appWithPlugin();
    expect(() => app.post("/bad", { config: { redlock: config as never } }, ok)).toThrow(message);
  });

  it("fails at ready() for a bad config.redlock declared inside a child plugin", async () => {
    const app = await appWithPlugin();
    app.register(async (child) => {
      child.post("/child", { config: { redlock: { key: "", wait: 1 } } }, ok);
    });
    await expect(app.ready()).rejects.toThrow(/^config\.redlock of POST \/child: key must be a non-empty/);
  });

  it("runs a query builder the handler returns unawaited once, and releases the lock once it has", async () => {
    const app = await appWithPlugin();
    const redis = cluster.servers[0]?.client() as Redis;
    let query: ReturnType<typeof lazyQuery<number>> | undefined;
    // not async: the builder itself is returned, as `(request) => db.update(accounts)...` does
    app.post("/accounts/:id/pay", { config: { redlock: "account:{params.id}" } }, () => {
      query = lazyQuery(() => redis.incr("paid:1"));
      return query;
    });
    const released = nextRelease("account:1");
    const answer = await app.inject({ method: "POST", url: "/accounts/1/pay" });
    expect(answer.statusCode).toBe(200);
    expect(answer.body).toBe("1");
    expect(query?.runs).toBe(1);
    expect(await redis.get("paid:1")).toBe("1");
    expect((await arrival(released, "the lock's release")).released).toBe(true);
  });

  it("refuses to load without a Redlock instance", async () => {
    const app = Fastify();
    apps.push(app);
    app.register(redlockPlugin, {} as never);
    await expect(app.ready()).rejects.toThrow(new TypeError("redlock must be a Redlock instance, got undefined"));
  });

  it("takes Fastify's own register options (prefix, logLevel, logSerializers) beside its defaults, and refuses an option no route takes", async () => {
    const app = Fastify();
    apps.push(app);
    // Fastify hands these to every plugin it registers: they are not route defaults
    await app.register(redlockPlugin, {
      redlock: dlm,
      ttl: 2000,
      prefix: "/api",
      logLevel: "warn",
      logSerializers: {},
    });
    app.get("/locked", { config: { redlock: "locked" } }, async (request) => ({ resources: request.lock?.resources }));
    expect((await app.inject({ url: "/locked" })).json()).toEqual({ resources: ["locked"] });

    const misspelt = Fastify();
    apps.push(misspelt);
    misspelt.register(redlockPlugin, { redlock: dlm, wiat: 2000 } as never);
    const ready = await misspelt.ready().then(
      () => "ready",
      (error: unknown) => error,
    );
    expect(ready).toEqual(new TypeError("defaults.wiat is not a route lock option"));
  });

  it("takes the lock after the route's own preHandlers, so a request they refuse locks nothing", async () => {
    const app = await appWithPlugin();
    let handled = 0;
    app.post(
      "/guarded",
      {
        config: { redlock: "guarded" },
        preHandler: async (request, reply) => {
          if (request.headers.authorization === undefined) return reply.code(401).send({ error: "Unauthorized" });
        },
      },
      async () => {
        handled++;
        return { ok: true };
      },
    );
    await app.listen({ port: 0, host: "127.0.0.1" });
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const refused = await send(`${url}/guarded`, { method: "POST" });
    expect(refused.status).toBe(401);
    expect(await cluster.servers[0]?.client().dbsize()).toBe(0);
    expect((await send(`${url}/guarded`, { method: "POST", headers: { authorization: "x" } })).status).toBe(200);
    expect(handled).toBe(1);
  });

  it("locks the HEAD twin of a GET route once, and a key function sees the parsed request", async () => {
    const app = await appWithPlugin();
    const keyOf = (source: HttpKeySource) => `doc:${(source.params as { id: string }).id}`;
    // a preHandler array of the caller's own: its HEAD twin must not inherit our preHandler from it
    const preHandler = [async () => {}];
    app.get("/docs/:id", { config: { redlock: keyOf }, preHandler }, async (request) => ({
      resources: request.lock?.resources,
    }));
    await app.listen({ port: 0, host: "127.0.0.1" });
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    expect((await send(`${url}/docs/7`, { method: "HEAD" })).status).toBe(200);
    expect(JSON.parse((await send(`${url}/docs/7`)).text)).toEqual({ resources: ["doc:7"] });
    expect(preHandler).toHaveLength(1);
  });

  it("answers 500 for a route declared before the plugin, whose handler would otherwise run unlocked", async () => {
    const logged: string[] = [];
    const app = Fastify({ logger: { level: "error", stream: { write: (line: string) => logged.push(line) } } });
    apps.push(app);
    const ran: string[] = [];
    // one config object for a route declared before the plugin and one declared after
    const shared = { redlock: "shared" };
    app.post("/early", { config: { redlock: "early:{params.id}" } }, async () => ran.push("early"));
    app.post("/early-shared", { config: shared }, async () => ran.push("early-shared"));
    app.get("/early-free", async () => ran.push("early-free"));
    await app.register(redlockPlugin, { redlock: dlm, ttl: 2000 });
    app.post("/late-shared", { config: shared }, async (request) => {
      ran.push("late-shared");
      return { resources: request.lock?.resources };
    });

    const early = await app.inject({ method: "POST", url: "/early" });
    expect(early.statusCode).toBe(500);
    // core's configuration error: a fixed body for the client, the message (route and fix) in the log
    expect(early.json()).toEqual({ error: "Lock service misconfigured" });
    expect(logged.map((line) => JSON.parse(line).msg)).toContain(
      "config.redlock of POST /early: the route was declared before @redlock-kit/fastify was registered and cannot be locked; register the plugin first",
    );
    expect((await app.inject({ method: "POST", url: "/early-shared" })).statusCode).toBe(500);
    expect((await app.inject({ url: "/early-free" })).statusCode).toBe(200);
    const late = await app.inject({ method: "POST", url: "/late-shared" });
    expect(late.json()).toEqual({ resources: ["shared"] });
    expect(ran).toEqual(["early-free", "late-shared"]);
    // the caller's object is left as it was
    expect(Object.getOwnPropertySymbols(shared)).toEqual([]);
    expect(await cluster.servers[0]?.client().keys("early*")).toEqual([]);
  });

  it("answers 500 for a route whose preHandler list a later plugin's onRoute hook replaced, so that its handler never runs unlocked", async () => {
    const logged: string[] = [];
    const app = Fastify({ logger: { level: "error", stream: { write: (line: string) => logged.push(line) } } });
    apps.push(app);
    const ran: string[] = [];
    await app.register(redlockPlugin, { redlock: dlm, ttl: 2000 });
    // registered after the lock's plugin: one plugin adds its preHandler, the other replaces the list
    app.addHook("onRoute", (route) => {
      const step = async () => {
        ran.push(`step ${route.url}`);
      };
      if (route.url === "/replaced") route.preHandler = [step];
      else route.preHandler = [...[route.preHandler ?? []].flat(), step];
    });
    app.post("/replaced", { config: { redlock: "replaced" } }, async () => ran.push("replaced"));
    app.post("/added", { config: { redlock: "added" } }, async (request) => {
      ran.push("added");
      return { resources: request.lock?.resources };
    });

    const replaced = await app.inject({ method: "POST", url: "/replaced" });
    expect([replaced.statusCode, replaced.json()]).toEqual([500, { error: "Lock service misconfigured" }]);
    expect(logged.map((line) => JSON.parse(line).msg)).toContain(
      "config.redlock of POST /replaced: the route's preHandler list was replaced after @redlock-kit/fastify added its lock to it (by an onRoute hook of a plugin registered later?); add to routeOptions.preHandler instead",
    );
    const added = await app.inject({ method: "POST", url: "/added" });
    expect(added.json()).toEqual({ resources: ["added"] });
    // the appended step runs after the lock is taken, before the handler
    expect(ran).toEqual(["step /replaced", "step /added", "added"]);
    expect(await cluster.servers[0]?.client().keys("*")).toEqual([]);
  });

  it("answers that 500 without the headers an onRequest hook before it set up for the route's answer; the others stay", async () => {
    const app = Fastify();
    apps.push(app);
    app.addHook("onRequest", async (_request, reply) => {
      reply.headers(SET_UP);
    });
    app.post("/early", { config: { redlock: "early" } }, ok);
    await app.register(redlockPlugin, { redlock: dlm });
    await app.listen({ port: 0, host: "127.0.0.1" });
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const answer = await send(`${url}/early`, { method: "POST" });
    expect([answer.status, answer.text]).toEqual([500, '{"error":"Lock service misconfigured"}']);
    expect(setUpHeaders(answer)).toEqual(OWN_ANSWER);
  });
});

describe("the README's shutdown hooks (preClose: stopAcquiring(), onClose: quit())", () => {
  it("make app.close() answer a request still waiting for its lock 503 at once, its handler not run, and then close the Redlock", async () => {
    const server = cluster.servers[0];
    if (!server) throw new Error("no redis-server");
    const admin = server.client();
    const own = new Redlock([server.client()]);
    const app = Fastify();
    await app.register(redlockPlugin, { redlock: own });
    app.addHook("preClose", async () => {
      await app.redlock.stopAcquiring();
    });
    app.addHook("onClose", async () => {
      await app.redlock.quit();
    });
    let ran = 0;
    app.post("/wait", { config: { redlock: { key: "shutdown:wait", wait: 5000 } } }, async () => {
      ran++;
      return { ok: true };
    });
    const address = await app.listen({ port: 0, host: "127.0.0.1" });
    const holder = await dlm.acquire("shutdown:wait", 60_000);
    try {
      const answer = send(`${address}/wait`, { method: "POST" });
      await expect.poll(() => admin.zcard("shutdown:wait:redlock-kit:waiters")).toBe(1);
      await app.close();
      // without the preClose hook the close waited for the request, which got 423 after its 5 s wait
      const response = await answer;
      expect(response.status).toBe(503);
      expect(JSON.parse(response.text)).toEqual({ error: "Lock service unavailable" });
      expect(ran).toBe(0);
      expect(await admin.get("shutdown:wait")).toBe(holder.value);
      expect(await admin.exists("shutdown:wait:redlock-kit:waiters")).toBe(0);
      await expect(own.acquire("shutdown:later", 1000)).rejects.toBeInstanceOf(LockUnavailableError);
    } finally {
      await holder.release();
      admin.disconnect();
    }
  });
});
