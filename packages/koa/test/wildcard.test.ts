/**
 * @koa/router gives a wildcard param as one string: `/files/*path` on `/files/a//b` sets
 * `ctx.params.path` to `"a//b"`. The middleware hands it to the key as its list of segments, as
 * Express 5 gives it, so `/files/a//b` is refused (400) rather than locked under another key than
 * `/files/a/b`, and `/files/a%2Fb/c` locks `file:a/b/c` like `/files/a/b/c`.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Router } from "@koa/router";
import Koa from "koa";
import { useWildcardApp } from "#test-helpers/wildcard-route.js";
import { createRedlockMiddleware } from "../src/index.js";

useWildcardApp("params.path", async (dlm, handle) => {
  const redlock = createRedlockMiddleware(dlm, { ttl: 10_000 });
  const app = new Koa();
  const router = new Router();
  router.get("/files/*path", redlock("file:{params.path}"), async (ctx) => {
    const path = ctx.params.path as string;
    await handle(path);
    ctx.body = { path, resources: ctx.state.lock?.resources };
  });
  app.use(router.routes());
  const server = http.createServer(app.callback());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
});
