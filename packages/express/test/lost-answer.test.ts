/**
 * Express has no point where a middleware sees the handler's answer before it is written: the
 * route's response decides at its first writeHead, write or end. A success or redirect whose lock
 * was lost goes out as 409 JSON however the handler writes it; what it writes after is discarded.
 */
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { type Lock, LockLostError, Redlock } from "@redlock-kit/core";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { countReleases, untilInvalid } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let server: http.Server;
let url: string;
let dlm: Redlock;
/** What the write callbacks of /written got. */
const callbacks: unknown[] = [];

beforeAll(async () => {
  dlm = new Redlock(cluster.servers.map((redis) => redis.client()));
  const redlock = createRedlockMiddleware(dlm, { ttl: 500, autoExtend: false });
  const app = express();
  app.post("/head/:id", redlock("lost:{params.id}"), async (req, res) => {
    await untilInvalid(req.lock as Lock);
    res.setHeader("x-kept", "yes");
    res.writeHead(200, { "content-type": "text/plain", "x-dropped": "yes" }).end("done");
  });
  app.post("/redirect/:id", redlock("lost:{params.id}"), async (req, res) => {
    await untilInvalid(req.lock as Lock);
    res.redirect(303, "/done");
  });
  app.post("/written/:id", redlock("lost:{params.id}"), async (req, res) => {
    await untilInvalid(req.lock as Lock);
    for (const chunk of ["a", "b"]) res.write(chunk, (error) => callbacks.push(error));
    res.end("c", () => callbacks.push("ended"));
  });
  server = http.createServer(app).listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  server.close();
  await dlm.quit();
});

it("answers 409 instead of an explicit writeHead(200) and its body; the headers set on the response stay, those of the writeHead call do not; released once", async () => {
  const releases = countReleases("lost:1");
  const answer = await send(`${url}/head/1`, { method: "POST" });
  expect([answer.status, answer.text]).toEqual([409, '{"error":"Lock was lost"}']);
  expect(answer.headers["content-type"]).toMatch(/^application\/json/);
  expect([answer.headers["x-kept"], answer.headers["x-dropped"]]).toEqual(["yes", undefined]);
  await expect.poll(() => releases.count).toBe(1);
  releases.stop();
});

it("answers 409 instead of a redirect, without its Location", async () => {
  const answer = await send(`${url}/redirect/2`, { method: "POST" });
  expect([answer.status, answer.text]).toEqual([409, '{"error":"Lock was lost"}']);
  expect(answer.headers.location).toBeUndefined();
});

it("discards what a handler writes after the 409, telling each write's callback the LockLostError", async () => {
  const answer = await send(`${url}/written/3`, { method: "POST" });
  expect([answer.status, answer.text]).toEqual([409, '{"error":"Lock was lost"}']);
  await expect.poll(() => callbacks.length).toBe(3);
  expect(callbacks.slice(0, 2).map((error) => error instanceof LockLostError)).toEqual([true, true]);
  expect(callbacks[2]).toBe("ended");
});
