/**
 * Express 5 (path-to-regexp v8) gives a wildcard param as a list of segments: `/files/*path` on
 * `/files/a/b/c` sets `req.params.path` to `["a", "b", "c"]`. A key template reading it locks the
 * path it came from, `file:a/b/c`, instead of answering 400 to every request.
 */

import { once } from "node:events";
import type http from "node:http";
import type { AddressInfo } from "node:net";
import { Redlock } from "@redlock-kit/core";
import express from "express";
import type { Redis } from "ioredis";
import { afterAll, beforeAll } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";
import { wildcardRoute } from "#test-helpers/wildcard-route.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
const wildcard = wildcardRoute();
let redis: Redis;
let dlm: Redlock;
let server: http.Server;
let url: string;

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  const redlock = createRedlockMiddleware(dlm, { ttl: 10_000 });
  const app = express();
  app.get("/files/*path", redlock("file:{params.path}"), async (req, res) => {
    const path = (req.params as { path: string[] }).path.join("/");
    await wildcard.handle(path);
    res.json({ path, resources: req.lock?.resources });
  });
  server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  wildcard.release.open();
  server?.close();
  await dlm?.quit();
});

wildcard.defineTests("params.path", () => ({ url, redis }));
