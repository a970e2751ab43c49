/**
 * A locked handler answering with res.sendFile() or res.download() whose client leaves mid-file:
 * Express's `send` destroys its file stream when the response closes and never ends the response,
 * so, as for any streamed body whose reader left, the lock is no longer extended and lapses within
 * one ttl rather than being released at the close (the handler may still be running).
 */
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Lock, Redlock } from "@redlock-kit/core";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { nextChunk, open } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { listenOnLoopback } from "#test-helpers/refused-routes.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let dlm: Redlock;
let server: Awaited<ReturnType<typeof listenOnLoopback>> | undefined;
let files = "";
/** The lock of the last request, and a gate opened once its handler has called the file method. */
let last: { lock?: Lock; started: ReturnType<typeof gate> } = { started: gate() };

beforeAll(async () => {
  dlm = new Redlock(cluster.servers.map((redis) => redis.client()));
  await warmUp(dlm);
  files = await mkdtemp(join(tmpdir(), "redlock-express-send-file-"));
  const file = join(files, "large.bin");
  await writeFile(file, "");
  // far more than the sockets' buffers hold: the file is still being sent when the client leaves
  await truncate(file, 64 << 20);
  // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
  const redlock = createRedlockMiddleware(dlm, { ttl: 500, instanceTimeout: 300 });
  const app = express();
  app.get("/sendFile/:id", redlock("send-file:{params.id}"), (req, res) => {
    last.lock = req.lock;
    res.sendFile(file);
    last.started.open();
  });
  app.get("/download/:id", redlock("send-file:{params.id}"), (req, res) => {
    last.lock = req.lock;
    res.download(file);
    last.started.open();
  });
  // the README's way to free the key at once: end the response in the method's callback
  app.get("/ends/:id", redlock("send-file:{params.id}"), (req, res, next) => {
    last.lock = req.lock;
    res.sendFile(file, (error?: NodeJS.ErrnoException) => {
      if (error?.code === "ECONNABORTED") res.end();
      else if (error) next(error);
    });
    last.started.open();
  });
  server = await listenOnLoopback(http.createServer(app));
});

afterAll(async () => {
  await server?.close();
  await dlm?.quit();
  if (files !== "") await rm(files, { recursive: true });
});

it.each([
  ["sendFile", "expired"],
  ["download", "expired"],
  ["ends", "released"],
])(
  "a client that leaves mid-file (%s): the lock is no longer extended; it lapses within one ttl unless the handler ends the response (%s)",
  async (method, end) => {
    last = { started: gate() };
    // a key per case: a lock that expired in the case before is, to Redis, held for a few ms more
    // (its validity ends the drift earlier than the key), and the next request would be refused 423
    const { request, response } = open(`${server?.url}/${method}/${method}`);
    request.on("error", () => {});
    const answer = await response;
    await last.started.opened;
    expect(answer.statusCode).toBe(200);
    await nextChunk(answer);
    const outcome = releasedOrExpired(`send-file:${method}`, last.lock as Lock);
    request.destroy();
    expect(await arrival(outcome, "the lock's end (expiry or release)")).toBe(end);
  },
);
