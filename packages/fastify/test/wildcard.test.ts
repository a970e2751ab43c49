/**
 * Fastify gives a wildcard route's rest of the path as `request.params["*"]`: `/files/*` on
 * `/files/a/b/c` sets it to `"a/b/c"`. A route keyed `"file:{params.*}"` locks `file:a/b/c`.
 */

import { Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { wildcardRoute } from "#test-helpers/wildcard-route.js";
import redlockPlugin from "../src/index.js";

const cluster = useRedisServers(1);
const wildcard = wildcardRoute();
let redis: Redis;
let dlm: Redlock;
let app: FastifyInstance;
let url: string;

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  app = Fastify();
  await app.register(redlockPlugin, { redlock: dlm, ttl: 10_000 });
  // before the fix: a TypeError here, "{params.*}" being a malformed placeholder
  app.get<{ Params: { "*": string } }>("/files/*", { config: { redlock: "file:{params.*}" } }, async (request) => {
    const path = request.params["*"];
    await wildcard.handle(path);
    return { path, resources: request.lock?.resources };
  });
  await app.listen({ port: 0, host: "127.0.0.1" });
  url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});

afterAll(async () => {
  wildcard.release.open();
  await app?.close();
  await dlm?.quit();
});

wildcard.defineTests("params.*", () => ({ url, redis }));

it("answers 400 to /files/, whose wildcard is empty, as to any missing part", async () => {
  const answer = await send(`${url}/files/`);
  expect(answer.status).toBe(400);
  expect(JSON.parse(answer.text)).toEqual({ error: 'Lock key part "params.*" is missing' });
  expect(await redis.keys("file:*")).toEqual([]);
});
