/**
 * Express 5 (path-to-regexp v8) gives a wildcard param as a list of segments: `/files/*path` on
 * `/files/a/b/c` sets `req.params.path` to `["a", "b", "c"]`. A key template reading it locks the
 * path it came from, `file:a/b/c`, instead of answering 400 to every request.
 */

import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Redlock } from "@redlock-kit/core";
import express from "express";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
let server: http.Server;
let url: string;
/** Opened by the handler of `/files/a/b/c`, which then waits for `release`. */
const entered = gate();
const release = gate();
const handled: string[] = [];

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  const redlock = createRedlockMiddleware(dlm, { ttl: 10_000 });
  const app = express();
  app.get("/files/*path", redlock("file:{params.path}"), async (req, res) => {
    const path = (req.params as { path: string[] }).path.join("/");
    handled.push(path);
    if (path === "a/b/c" && handled.length === 1) {
      entered.open();
      await release.opened;
    }
    res.json({ path, resources: req.lock?.resources });
  });
  server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server?.close();
  await dlm?.quit();
});

it("locks a wildcard path as the path it came from: the same path contends (423), another does not", async () => {
  const first = send(`${url}/files/a/b/c`);
  // before the fix: a 400 at once, and the handler never runs
  const state = await Promise.race([entered.opened.then(() => "holding"), first.then((answer) => answer.status)]);
  expect(state).toBe("holding");
  expect(await redis.keys("file:*")).toEqual(["file:a/b/c"]);

  const same = await send(`${url}/files/a/b/c`);
  expect(same.status).toBe(423);
  // %2F inside a segment (["a/b", "c"]) names the same path: the same key, so it contends too
  expect((await send(`${url}/files/a%2Fb/c`)).status).toBe(423);
  const other = await send(`${url}/files/a/b/d`);
  expect(other.status).toBe(200);
  expect(JSON.parse(other.text)).toEqual({ path: "a/b/d", resources: ["file:a/b/d"] });

  release.open();
  const answer = await first;
  expect(answer.status).toBe(200);
  expect(JSON.parse(answer.text)).toEqual({ path: "a/b/c", resources: ["file:a/b/c"] });
  expect(await redis.keys("file:*")).toEqual([]);
  expect(handled).toEqual(["a/b/c", "a/b/d"]);
});

/** GET `path` sent as written: a URL string would have its dot segments resolved by the client. */
function getRaw(path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port: (server.address() as AddressInfo).port, path, agent: false }, (response) => {
        let text = "";
        response.setEncoding("utf8").on("data", (chunk: string) => {
          text += chunk;
        });
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text }));
      })
      .on("error", reject);
  });
}

it.each(["/files/a//b", "/files/a/", "/files/a/./b", "/files/a/../b", "/files/a/%2E%2E/b", "/files/a%2F%2E%2E/b"])(
  "answers 400 to %s, whose empty or dot segment would lock a path that another spelling locks under another key",
  async (path) => {
    const answer = await getRaw(path);
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.text)).toEqual({
      error: 'Lock key part "params.path" has an empty, "." or ".." path segment',
    });
    expect(await redis.keys("file:*")).toEqual([]);
  },
);
