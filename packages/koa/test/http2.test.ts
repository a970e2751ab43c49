/**
 * Koa on `http2.createServer(app.callback())`: Node's HTTP/2 response emits 'finish' when its
 * stream closes, also when the client cancelled it (RST_STREAM) and nothing ended it. That is the
 * client leaving, not the handler's end.
 */
import { once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Router } from "@koa/router";
import { Redlock } from "@redlock-kit/core";
import Koa from "koa";
import { afterAll, beforeAll, expect, it } from "vitest";
import { cancelledExport, connect, status } from "#test-helpers/http2-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let dlm: Redlock;
beforeAll(() => {
  dlm = new Redlock(cluster.servers.map((server) => server.client()));
});
afterAll(async () => {
  await dlm.quit();
});

it("over HTTP/2, does not release the lock of a streamed body whose client cancelled it while its producer still runs: it expires within one ttl", async () => {
  // 3 s: the next request comes well within it on a loaded machine
  const redlock = createRedlockMiddleware(dlm, { ttl: 3000 });
  const app = new Koa();
  // Koa logs the cancelled body's "Premature close" to stderr unless silent
  app.silent = true;
  const router = new Router();
  const exported = cancelledExport("h2-export:1");
  router.get("/exports/:id", redlock("h2-export:{params.id}"), (ctx) => {
    ctx.body = exported.run(ctx.state.lock, ctx.res);
  });
  app.use(router.routes());
  const server = http2.createServer(app.callback()).listen(0, "127.0.0.1");
  await once(server, "listening");
  const session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    await exported.check(session, "/exports/1");
  } finally {
    exported.stop();
    session.close();
    server.close();
  }
});

it("over HTTP/2, answers a HEAD request as a GET, its handler run under the lock (Node finishes a HEAD response's stream from the start)", async () => {
  const redlock = createRedlockMiddleware(dlm);
  const app = new Koa();
  const ran: (string | undefined)[] = [];
  app.use(redlock("h2-head:{query.id}"));
  app.use((ctx) => {
    ran.push(ctx.state.lock?.resources[0]);
    ctx.type = "text/plain";
    ctx.body = "report";
  });
  const server = http2.createServer(app.callback()).listen(0, "127.0.0.1");
  await once(server, "listening");
  const session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    expect([await status(session, "/?id=1", "HEAD"), await status(session, "/?id=2")]).toEqual([200, 200]);
    expect(ran).toEqual(["h2-head:1", "h2-head:2"]);
  } finally {
    session.close();
    server.close();
  }
});
