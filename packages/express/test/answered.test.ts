/**
 * A request that another middleware answered while the route waited for its lock (a
 * connect-timeout-style 503) and whose wait then ended without the lock: nobody is left to answer,
 * and the route must not try to, which throws once the headers are out.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { type AcquireMessage, Redlock } from "@redlock-kit/core";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { send } from "#test-helpers/http-client.js";
import { nextAcquireStart, nextMessage } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware, redlockErrorHandler } from "../src/index.js";

const cluster = useRedisServers(1);
let server: http.Server;
let url: string;
let dlm: Redlock;
/** Errors that reached the app's last error handler. */
const passedOn: unknown[] = [];
/** Opened by the test: the timeout middleware answers then. */
let timeout = gate();
let handlerRuns = 0;

beforeAll(async () => {
  dlm = new Redlock(cluster.servers.map((redis) => redis.client()));
  const redlock = createRedlockMiddleware(dlm);
  const app = express();
  app.set("env", "production");
  // a connect-timeout-style middleware: it answers 503 on its own while the request goes on
  app.use((_req, res, next) => {
    void timeout.opened.then(() => {
      if (!res.headersSent) res.status(503).json({ error: "timeout" });
    });
    next();
  });
  for (const hooks of [false, true]) {
    app.post(
      hooks ? "/hooked/:id" : "/plain/:id",
      redlock("answered:{params.id}", {
        wait: 300,
        ...(hooks && { onLocked: (_req, res) => res.status(429).json({ busy: true }) }),
      }),
      (_req, res) => {
        handlerRuns++;
        res.json({ ran: true });
      },
    );
  }
  app.use(redlockErrorHandler());
  app.use((error: Error, _req: express.Request, _res: express.Response, next: express.NextFunction) => {
    passedOn.push(error);
    next(error);
  });
  server = http.createServer(app).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await dlm?.quit();
});

it.each(["plain", "hooked"])(
  "a %s route whose wait ends in contention after a timeout answered writes nothing more: no error for the app's error handler",
  async (kind) => {
    timeout = gate();
    passedOn.length = 0;
    const resource = `answered:${kind}`;
    const holder = await dlm.acquire(resource, 10_000);
    const started = nextAcquireStart(resource);
    const ended = nextMessage<AcquireMessage>("redlock-kit:acquire", (m) => m.resources.includes(resource));
    const answer = send(`${url}/${kind}/${kind}`, { method: "POST" });
    await started;
    timeout.open();
    expect((await answer).status).toBe(503);
    expect((await ended).outcome).toBe("contention");
    // the route's answer runs a few promise turns after the acquisition's end
    await new Promise((resolve) => setImmediate(resolve));
    // before: ERR_HTTP_HEADERS_SENT from writing the 423 (or the hook's 429) over the 503
    expect(passedOn.map((error) => (error as { code?: string }).code ?? String(error))).toEqual([]);
    expect(handlerRuns).toBe(0);
    await holder.release();
  },
);
