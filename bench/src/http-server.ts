/**
 * The HTTP server of the HTTP rows, run as a child process by http.ts:
 * `node http-server.js <express|koa|fastify> <redis port>`. Serves the same handler under
 * /open (no lock), /locked (redlock-kit's adapter) and, on Express, /node-redlock (a
 * minimal hand-written middleware on node-redlock, which ships none), then reports its port
 * and routes over IPC.
 */
import type { AddressInfo } from "node:net";
import Router from "@koa/router";
import { Redlock } from "@redlock-kit/core";
import { createRedlockMiddleware as expressRedlock } from "@redlock-kit/express";
import { redlockPlugin } from "@redlock-kit/fastify";
import { createRedlockMiddleware as koaRedlock } from "@redlock-kit/koa";
import express, { type RequestHandler } from "express";
import Fastify from "fastify";
import { Redis } from "ioredis";
import Koa from "koa";
import NodeRedlock from "redlock";
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
  { name: "redlock-kit", prefix: "/locked", clients: `@redlock-kit/${framework} on ${OURS}` },
];

async function listenExpress(): Promise<number> {
  const app = express();
  const pay: RequestHandler = (req, res) => {
    res.json({ paid: req.params.id });
  };
  const redlock = expressRedlock(dlm, { ttl: TTL });
  app.post("/open/orders/:id/pay", pay);
  app.post("/locked/orders/:id/pay", redlock(KEY), pay);

  const client = new Redis({ host: "127.0.0.1", port });
  client.on("error", () => {});
  closers.push(() => client.quit());
  const nodeRedlock = new NodeRedlock([client], { retryCount: 0 });
  nodeRedlock.on("error", () => {});
  // What a careful user of node-redlock writes: acquire, release once the response is done (or the
  // client left, even before the lock was granted), 423 when held. Its own key space, so that a
  // lock left by one route can never answer 423 on another.
  const nodeRedlockMiddleware: RequestHandler = (req, res, next) => {
    let closed = false;
    let release: (() => void) | undefined;
    res.once("close", () => {
      closed = true;
      release?.();
    });
    nodeRedlock.acquire([`node-redlock:order:${req.params.id}`], TTL).then(
      (lock) => {
        release = () => {
          lock.release().catch(() => {});
        };
        if (closed) release();
        else next();
      },
      () => {
        if (!closed) res.status(423).json({ error: "Resource is locked" });
      },
    );
  };
  app.post("/node-redlock/orders/:id/pay", nodeRedlockMiddleware, pay);
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
  router.post("/locked/orders/:id/pay", redlock(KEY), (ctx) => {
    ctx.body = { paid: ctx.params.id };
  });
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
  app.post("/locked/orders/:id/pay", { config: { redlock: KEY } }, pay);
  await app.listen({ port: 0, host: "127.0.0.1" });
  closers.push(() => app.close());
  return (app.server.address() as AddressInfo).port;
}

const listen = { express: listenExpress, koa: listenKoa, fastify: listenFastify }[framework ?? ""];
if (!listen || !Number.isInteger(port)) throw new Error("usage: http-server <express|koa|fastify> <redis port>");
const ready: ServerReady = { port: await listen(), routes };
process.send?.(ready);

const shutdown = async () => {
  await Promise.allSettled(closers.map((close) => close()));
  process.exit(0);
};
process.once("SIGTERM", () => void shutdown());
// the benchmark went away without stopping us
process.once("disconnect", () => void shutdown());
