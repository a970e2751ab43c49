/**
 * Express 5 (path-to-regexp v8) gives a wildcard param as a list of segments: `/files/*path` on
 * `/files/a/b/c` sets `req.params.path` to `["a", "b", "c"]`. A key template reading it locks the
 * path it came from, `file:a/b/c`, instead of answering 400 to every request.
 */

import { once } from "node:events";
import type { AddressInfo } from "node:net";
import express from "express";
import { useWildcardApp } from "#test-helpers/wildcard-route.js";
import { createRedlockMiddleware } from "../src/index.js";

useWildcardApp("params.path", async (dlm, handle) => {
  const redlock = createRedlockMiddleware(dlm, { ttl: 10_000 });
  const app = express();
  app.get("/files/*path", redlock("file:{params.path}"), async (req, res) => {
    const path = (req.params as { path: string[] }).path.join("/");
    await handle(path);
    res.json({ path, resources: req.lock?.resources });
  });
  const server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
});
