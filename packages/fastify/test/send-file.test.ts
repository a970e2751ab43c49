/**
 * A locked route answering with @fastify/static's `reply.sendFile()`, which sends a file stream once
 * the file's stat is in: the lock is held while the file is sent and released at the stream's end;
 * a client that leaves mid-file has its lock lapse within one ttl, as for any streamed body whose
 * reader left.
 */
import diagnosticsChannel from "node:diagnostics_channel";
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fastifyStatic from "@fastify/static";
import { type Lock, Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance, type FastifyReply } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { open } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import redlockPlugin from "../src/index.js";

/** Far more than the socket buffers of both ends hold: a client that reads nothing keeps the stream from ending. */
const FILE_SIZE = 64 * 1024 * 1024;

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
let app: FastifyInstance;
let url: string;
let root = "";
/** The lock and Node response of the last request. */
let last: { lock: Lock; raw: ServerResponse };

/** How the handler answers with the file: returning the reply (async) or nothing (sync). */
const handlers = {
  "returns the reply": async (reply: FastifyReply) => reply.sendFile("big.bin"),
  "returns nothing": (reply: FastifyReply) => {
    reply.sendFile("big.bin");
  },
};
type Style = keyof typeof handlers;

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  await warmUp(dlm);
  root = await mkdtemp(join(tmpdir(), "fastify-send-file-"));
  await writeFile(join(root, "big.bin"), "");
  await truncate(join(root, "big.bin"), FILE_SIZE);
  // a failed test may leave a 64 MiB answer unread: close() must not wait for it
  app = Fastify({ forceCloseConnections: true });
  await app.register(fastifyStatic, { root, serve: false });
  // 2 s locks, renewed while the file is sent: a 500 ms one lapsed mid-file in a CI-like run while
  // another file started 50 processes (a renewal's round trip stalled past what was left of the
  // ttl). One attempt, 300 ms per instance. Extended until maxHoldMs, a lock whose client left
  // would outlive the polls: only its expiry passes.
  await app.register(redlockPlugin, { redlock: dlm, ttl: 2000, instanceTimeout: 300, maxHoldMs: 600_000 });
  for (const [index, answer] of Object.values(handlers).entries()) {
    app.get(`/${index}/:id`, { config: { redlock: "send-file:{params.id}" } }, (request, reply) => {
      last = { lock: request.lock as Lock, raw: reply.raw };
      return answer(reply);
    });
  }
  await app.listen({ port: 0, host: "127.0.0.1" });
  url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});
afterEach(async () => {
  await redis.flushall();
});
afterAll(async () => {
  await app?.close();
  await dlm?.quit();
  await rm(root, { recursive: true, force: true });
});

const path = (style: Style, id: string) => `${url}/${Object.keys(handlers).indexOf(style)}/${id}`;

/** Whether the response had ended when the release of `resource` was called. */
function endedAtRelease(resource: string): Promise<boolean> {
  const channel = "tracing:redlock-kit:release:start";
  return new Promise((resolve) => {
    const onCall = (context: unknown) => {
      if (!(context as { resources: readonly string[] }).resources.includes(resource)) return;
      diagnosticsChannel.unsubscribe(channel, onCall);
      resolve(last.raw.writableFinished);
    };
    diagnosticsChannel.subscribe(channel, onCall);
  });
}

async function byteCount(response: IncomingMessage): Promise<number> {
  let bytes = 0;
  for await (const chunk of response) bytes += (chunk as Buffer).length;
  return bytes;
}

describe.each(Object.keys(handlers) as Style[])("a handler answering with reply.sendFile (%s)", (style) => {
  it("holds the lock while the file is sent, and releases it at the stream's end", async () => {
    const { request, response } = open(path(style, "1"));
    request.on("error", () => {});
    try {
      // the headers are in and nothing is read: the file's stream cannot end
      expect((await response).statusCode).toBe(200);
      const next = open(path(style, "1"));
      next.request.on("error", () => {});
      try {
        expect((await next.response).statusCode).toBe(423);
      } finally {
        next.request.destroy();
      }
      expect(last.raw.writableFinished).toBe(false);
      const ended = releasedOrExpired("send-file:1", last.lock);
      const endedFirst = endedAtRelease("send-file:1");
      expect(await byteCount(await response)).toBe(FILE_SIZE);
      expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("released");
      expect(await endedFirst).toBe(true);
    } finally {
      request.destroy();
    }
  });

  it("lets the lock lapse within one ttl when the client leaves mid-file", async () => {
    const { request, response } = open(path(style, "2"));
    request.on("error", () => {});
    expect((await response).statusCode).toBe(200);
    const ended = releasedOrExpired("send-file:2", last.lock);
    request.destroy();
    expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
    await expect.poll(() => redis.exists("send-file:2")).toBe(0);
  });
});
