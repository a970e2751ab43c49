/**
 * The HTTP server of the HTTP rows, run as a child process by http.ts:
 * `node http-server.js <express|koa|fastify|hono> <redis port>`. Serves the same handler under
 * /open (no lock), /pass (a middleware that does nothing), /locked (redlock-kit's adapter),
 * /floor (the floor's SET NX PX and compare-and-delete around the handler) and, on Express,
 * /node-redlock (a minimal hand-written middleware on node-redlock, which ships none), then
 * reports its port and routes over IPC.
 */
import { randomBytes } from "node:crypto";
import type { ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type HttpBindings, serve } from "@hono/node-server";
import Router from "@koa/router";
import { Redlock } from "@redlock-kit/core";
import { createRedlockMiddleware as expressRedlock } from "@redlock-kit/express";
import { redlockPlugin } from "@redlock-kit/fastify";
import { createRedlockMiddleware as honoRedlock } from "@redlock-kit/hono";
import { createRedlockMiddleware as koaRedlock } from "@redlock-kit/koa";
import express, { type RequestHandler } from "express";
import Fastify from "fastify";
import { Hono } from "hono";
import { Redis } from "ioredis";
import Koa from "koa";
import NodeRedlock from "redlock";
import { FLOOR_RELEASE } from "./floor-script.js";
import type { ServerReady } from "./http.js";

const TTL = 5000;
const KEY = "order:{params.id}";
const [framework, redisPort] = process.argv.slice(2);
const port = Number(redisPort);

// Redlock creates (and owns) its client from options, as the README shows.
const dlm = new Redlock([{ host: "127.0.0.1", port }]);
const OURS = "Redlock's own client from { host, port }";
const closers: (() => Promise<unknown>)[] = [() => dlm.quit()];
const routes: ServerReady["routes"][number][] = [
  { name: "no lock", prefix: "/open", clients: "same handler, no middleware" },
  {
    name: "pass-through middleware",
    prefix: "/pass",
    clients: "same handler behind a middleware that does nothing: what any route middleware costs",
  },
  { name: "redlock-kit", prefix: "/locked", clients: `@redlock-kit/${framework} on ${OURS}` },
];

/**
 * What a careful user writes around a lock call, which node-redlock does not ship: acquire, then
 * release once the response has closed, also when the client left before the lock was granted (a
 * release registered after that would never run, and the key would answer 423 until its ttl).
 * Resolves to "granted", "held" (answer 423) or "left" (nobody to answer).
 */
async function lockUntilClosed(
  res: ServerResponse,
  acquire: () => Promise<(() => Promise<unknown>) | undefined>,
): Promise<"granted" | "held" | "left"> {
  let closed = false;
  let release: (() => void) | undefined;
  res.once("close", () => {
    closed = true;
    release?.();
  });
  const unlock = await acquire().catch(() => undefined);
  if (unlock === undefined) return closed ? "left" : "held";
  release = () => {
    unlock().catch(() => {});
  };
  if (!closed) return "granted";
  release();
  return "left";
}

/** `lockUntilClosed` as an Express middleware: 423 when held. */
function handWrittenLock(acquire: (id: string) => Promise<(() => Promise<unknown>) | undefined>): RequestHandler {
  return (req, res, next) => {
    void lockUntilClosed(res, () => acquire(req.params.id as string)).then((outcome) => {
      if (outcome === "granted") next();
      else if (outcome === "held") res.status(423).json({ error: "Resource is locked" });
    });
  };
}

/**
 * The floor of the core rows as a lock for a route: SET NX PX, then the compare-and-delete script,
 * and nothing else (no timeouts, validity, auto-extension or key templates). What any Redis lock
 * costs a route on this machine. Resolves to the release, or undefined when the key is held.
 */
function floorLock(): (id: string) => Promise<(() => Promise<unknown>) | undefined> {
  const client = new Redis({ host: "127.0.0.1", port });
  client.on("error", () => {});
  closers.push(() => client.quit());
  client.defineCommand("floorRelease", { numberOfKeys: 1, lua: FLOOR_RELEASE });
  const floorClient = client as Redis & { floorRelease(key: string, value: string): Promise<number> };
  const prefix = randomBytes(8).toString("hex");
  let serial = 0;
  routes.push({
    name: "floor middleware (raw ioredis)",
    prefix: "/floor",
    clients: "SET NX PX, 423 when held, compare-and-delete script after the response, on a plain ioredis client",
  });
  return async (id) => {
    // its own key space, so that a lock left by one route can never answer 423 on another
    const key = `floor:order:${id}`;
    const value = prefix + (serial++).toString(36);
    if ((await floorClient.set(key, value, "PX", TTL, "NX")) !== "OK") return undefined;
    return () => floorClient.floorRelease(key, value);
  };
}

async function listenExpress(): Promise<number> {
  const app = express();
  const pay: RequestHandler = (req, res) => {
    res.json({ paid: req.params.id });
  };
  const redlock = expressRedlock(dlm, { ttl: TTL });
  app.post("/open/orders/:id/pay", pay);
  app.post("/pass/orders/:id/pay", (_req, _res, next) => next(), pay);
  app.post("/locked/orders/:id/pay", redlock(KEY), pay);

  const client = new Redis({ host: "127.0.0.1", port });
  client.on("error", () => {});
  closers.push(() => client.quit());
  const nodeRedlock = new NodeRedlock([client], { retryCount: 0 });
  nodeRedlock.on("error", () => {});
  // Each in its own key space, so that a lock left by one route can never answer 423 on another.
  app.post(
    "/node-redlock/orders/:id/pay",
    handWrittenLock(async (id) => {
      const lock = await nodeRedlock.acquire([`node-redlock:order:${id}`], TTL);
      return () => lock.release();
    }),
    pay,
  );

  app.post("/floor/orders/:id/pay", handWrittenLock(floorLock()), pay);
  routes.push({
    name: "node-redlock middleware",
    prefix: "/node-redlock",
    clients: "hand-written middleware (acquire, release on close) on a handed plain ioredis client",
  });

  return new Promise((resolve) => {
    const server = app.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
    closers.push(() => new Promise((done) => server.close(done)));
  });
}

async function listenKoa(): Promise<number> {
  const app = new Koa();
  const router = new Router();
  const redlock = koaRedlock(dlm, { ttl: TTL });
  router.post("/open/orders/:id/pay", (ctx) => {
    ctx.body = { paid: ctx.params.id };
  });
  router.post(
    "/pass/orders/:id/pay",
    (_ctx, next) => next(),
    (ctx) => {
      ctx.body = { paid: ctx.params.id };
    },
  );
  router.post("/locked/orders/:id/pay", redlock(KEY), (ctx) => {
    ctx.body = { paid: ctx.params.id };
  });
  const floor = floorLock();
  router.post(
    "/floor/orders/:id/pay",
    // released once the response has closed, as on the other frameworks and as our adapter does:
    // Koa writes the body after the middleware chain has resolved
    async (ctx, next) => {
      const outcome = await lockUntilClosed(ctx.res, () => floor(ctx.params.id as string));
      if (outcome === "granted") await next();
      else if (outcome === "held") {
        ctx.status = 423;
        ctx.body = { error: "Resource is locked" };
      }
    },
    (ctx) => {
      ctx.body = { paid: ctx.params.id };
    },
  );
  app.use(router.routes());
  return new Promise((resolve) => {
    const server = app.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
    closers.push(() => new Promise((done) => server.close(done)));
  });
}

async function listenFastify(): Promise<number> {
  const app = Fastify();
  await app.register(redlockPlugin, { redlock: dlm, ttl: TTL });
  const pay = async (request: { params: unknown }) => ({ paid: (request.params as { id: string }).id });
  app.post("/open/orders/:id/pay", pay);
  // our plugin runs as the route's last preHandler: the pass-through row is an empty one
  app.post("/pass/orders/:id/pay", { preHandler: async () => {} }, pay);
  app.post("/locked/orders/:id/pay", { config: { redlock: KEY } }, pay);
  const floor = floorLock();
  app.post(
    "/floor/orders/:id/pay",
    {
      preHandler: async (request, reply) => {
        const outcome = await lockUntilClosed(reply.raw, () => floor((request.params as { id: string }).id));
        if (outcome === "held") return reply.code(423).send({ error: "Resource is locked" });
        if (outcome === "left") return reply.hijack();
      },
    },
    pay,
  );
  await app.listen({ port: 0, host: "127.0.0.1" });
  closers.push(() => app.close());
  return (app.server.address() as AddressInfo).port;
}

async function listenHono(): Promise<number> {
  // @hono/node-server hands the Node request and response to the app as c.env
  const app = new Hono<{ Bindings: HttpBindings }>();
  const redlock = honoRedlock(dlm, { ttl: TTL });
  app.post("/open/orders/:id/pay", (c) => c.json({ paid: c.req.param("id") }));
  app.post(
    "/pass/orders/:id/pay",
    (_c, next) => next(),
    (c) => c.json({ paid: c.req.param("id") }),
  );
  app.post("/locked/orders/:id/pay", redlock(KEY), (c) => c.json({ paid: c.req.param("id") }));
  const floor = floorLock();
  app.post(
    "/floor/orders/:id/pay",
    // released once the Node response has closed, as on the other frameworks: Hono returns a
    // Response that @hono/node-server writes after the middleware chain has resolved
    async (c, next) => {
      const outcome = await lockUntilClosed(c.env.outgoing, () => floor(c.req.param("id") as string));
      if (outcome === "granted") return next();
      if (outcome === "held") return c.json({ error: "Resource is locked" }, 423);
      return new Response(null, { status: 499 });
    },
    (c) => c.json({ paid: c.req.param("id") }),
  );
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => resolve(info.port));
    closers.push(() => new Promise((done) => server.close(done)));
  });
}

const listen = { express: listenExpress, koa: listenKoa, fastify: listenFastify, hono: listenHono }[framework ?? ""];
if (!listen || !Number.isInteger(port)) throw new Error("usage: http-server <express|koa|fastify|hono> <redis port>");
const ready: ServerReady = { port: await listen(), routes };
process.send?.(ready);
// the benchmark asks for our CPU time before and after each burst
process.on("message", (message) => {
  if (message === "cpu") process.send?.({ cpu: process.cpuUsage() });
});

const shutdown = async () => {
  await Promise.allSettled(closers.map((close) => close()));
  process.exit(0);
};
process.once("SIGTERM", () => void shutdown());
// the benchmark went away without stopping us
process.once("disconnect", () => void shutdown());
