/**
 * Express has no point where a middleware sees the handler's answer before it is written: the
 * route's response decides at its first writeHead, write or end. A success or redirect whose lock
 * was lost goes out as 409 JSON however the handler writes it; what it writes after is discarded.
 */
import { once } from "node:events";
import { readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Lock, LockLostError, Redlock } from "@redlock-kit/core";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { countReleases, untilInvalid } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let server: http.Server;
let url: string;
let dlm: Redlock;
/** What the write callbacks of /written got. */
const callbacks: unknown[] = [];
/** What /file sends: larger than one read of the file stream. */
const file = join(tmpdir(), `redlock-kit-lost-answer-${process.pid}.txt`);

/** How many of this process's file descriptors are open on `file`. */
const openOnFile = () =>
  readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === file;
    } catch {
      return false; // closed since the listing
    }
  }).length;

beforeAll(async () => {
  dlm = new Redlock(cluster.servers.map((redis) => redis.client()));
  // the routes' one attempt at a 500 ms lock waits for a new client to say who it is
  await warmUp(dlm);
  // the default per-instance timeout of a 500 ms lock (50 ms) would answer 503 whenever Redis answers
  // slowly on a loaded machine; 300 ms still leaves the lock valid for a while
  const redlock = createRedlockMiddleware(dlm, { ttl: 500, instanceTimeout: 300, autoExtend: false });
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
  // as compression (or a session's end) on the route does: a wrapper installed after the guard
  const upperCase: express.RequestHandler = (_req, res, next) => {
    const { write, end } = res;
    res.write = function upperWrite(this: http.ServerResponse, chunk: string, ...rest: unknown[]) {
      return Reflect.apply(write, this, [chunk.toUpperCase(), ...rest]);
    } as typeof res.write;
    res.end = function upperEnd(this: http.ServerResponse, chunk?: string, ...rest: unknown[]) {
      return Reflect.apply(end, this, [chunk?.toUpperCase(), ...rest]);
    } as typeof res.end;
    next();
  };
  const writeThree: express.RequestHandler = (_req, res) => {
    res.write("a");
    res.write("b");
    res.end("c");
  };
  const intact = createRedlockMiddleware(dlm, { ttl: 60_000 });
  app.get("/wrapped-intact/:id", intact("lost:{params.id}"), upperCase, writeThree);
  app.get("/wrapped/:id", redlock("lost:{params.id}"), upperCase, async (req, res, next) => {
    await untilInvalid(req.lock as Lock);
    writeThree(req, res, next);
  });
  // framing of a streamed body: chunked, with a trailer announced
  const framed: express.RequestHandler = (req, res) => {
    if (req.query.te !== undefined) res.setHeader("transfer-encoding", "chunked");
    res.setHeader("trailer", "x-sum");
    res.write("a");
    res.addTrailers({ "x-sum": "1" });
    res.end("b");
  };
  app.get("/framed-intact/:id", intact("lost:{params.id}"), framed);
  app.get("/framed/:id", redlock("lost:{params.id}"), async (req, res, next) => {
    await untilInvalid(req.lock as Lock);
    framed(req, res, next);
  });
  // what the response has of its own when the handler runs (the guard adds nothing: shared methods)
  app.post("/own-methods/:id", intact("lost:{params.id}"), (_req, res) => {
    res.json((["writeHead", "write", "end"] as const).filter((name) => Object.hasOwn(res, name)));
  });
  // a wrapper installed before the route's middleware (compression on the app): the guard goes in front of it
  app.get("/wrapped-before-intact/:id", upperCase, intact("lost:{params.id}"), writeThree);
  app.get("/wrapped-before/:id", upperCase, redlock("lost:{params.id}"), async (req, res, next) => {
    await untilInvalid(req.lock as Lock);
    writeThree(req, res, next);
  });
  // sub-apps swap the response's prototype after the guard: Express's own, and one built as another
  // copy of Express would be (its own base response, over Node's ServerResponse)
  for (const [path, copy] of [
    ["/mounted", false],
    ["/mounted-copy", true],
  ] as const) {
    const sub = express();
    if (copy) {
      const base = Object.create(http.ServerResponse.prototype, Object.getOwnPropertyDescriptors(express.response));
      sub.response = Object.create(base, { app: { configurable: true, enumerable: true, writable: true, value: sub } });
    }
    sub.post("/pay", async (req, res) => {
      if (req.query.lose !== undefined) await untilInvalid(req.lock as Lock);
      res.json({ paid: true });
    });
    app.use(`${path}/:id`, redlock("lost:{params.id}"), sub);
  }
  writeFileSync(file, "x".repeat(1 << 20));
  app.get("/file/:id", redlock("lost:{params.id}"), async (req, res) => {
    await untilInvalid(req.lock as Lock);
    res.download(file);
  });
  server = http.createServer(app).listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  server.close();
  await dlm.quit();
  rmSync(file, { force: true });
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

it("leaves in place a wrapper installed on the response after the route's middleware (compression on the route): with the lock intact it transforms every chunk; lost, the 409 goes out unchanged below it", async () => {
  const intact = await send(`${url}/wrapped-intact/4`);
  expect([intact.status, intact.text]).toEqual([200, "ABC"]);
  const lost = await send(`${url}/wrapped/5`);
  expect([lost.status, lost.text]).toEqual([409, '{"error":"Lock was lost"}']);
});

it("answers a well-formed 409 instead of a chunked body announcing a trailer: the replaced body's Transfer-Encoding and Trailer go with it", async () => {
  for (const query of ["", "?te"]) {
    const intact = await send(`${url}/framed-intact/6${query}`);
    expect([intact.status, intact.text, intact.headers["transfer-encoding"]]).toEqual([200, "ab", "chunked"]);
    const lost = await send(`${url}/framed/7${query}`);
    expect([lost.status, lost.text]).toEqual([409, '{"error":"Lock was lost"}']);
    expect([lost.headers["transfer-encoding"], lost.headers.trailer]).toEqual([undefined, undefined]);
  }
});

it("answers 409 instead of res.download()'s file, without its Content-Disposition, and the file is closed", async () => {
  const answer = await send(`${url}/file/8`);
  expect([answer.status, answer.text]).toEqual([409, '{"error":"Lock was lost"}']);
  expect(answer.headers["content-disposition"]).toBeUndefined();
  await expect.poll(openOnFile).toBe(0);
});

it("guards a response with no method of its own: the route's lock is checked through the methods every ServerResponse shares", async () => {
  const answer = await send(`${url}/own-methods/9`, { method: "POST" });
  expect([answer.status, answer.text]).toEqual([200, "[]"]);
});

it("guards a response that has its own wrappers from before the route's middleware, in front of them: intact, they transform every chunk; lost, the 409 goes out through them", async () => {
  const intact = await send(`${url}/wrapped-before-intact/10`);
  expect([intact.status, intact.text]).toEqual([200, "ABC"]);
  const lost = await send(`${url}/wrapped-before/11`);
  expect([lost.status, lost.text]).toEqual([409, '{"ERROR":"LOCK WAS LOST"}']);
});

it("answers 409 from a handler in a sub-app mounted after the route's middleware, also one of another copy of Express (the response's prototype swapped after the guard)", async () => {
  for (const path of ["mounted", "mounted-copy"]) {
    const intact = await send(`${url}/${path}/12/pay`, { method: "POST" });
    expect([path, intact.status, intact.text]).toEqual([path, 200, '{"paid":true}']);
    const lost = await send(`${url}/${path}/13/pay?lose`, { method: "POST" });
    expect([path, lost.status, lost.text]).toEqual([path, 409, '{"error":"Lock was lost"}']);
  }
});

it("leaves the responses no route guards as they were: Node's methods answer through the shared ones", async () => {
  const plain = http.createServer((_req, res) => {
    res.writeHead(201, { "x-plain": "yes" });
    res.write("a", () => {
      res.end("b");
    });
  });
  plain.listen(0, "127.0.0.1");
  await once(plain, "listening");
  try {
    const answer = await send(`http://127.0.0.1:${(plain.address() as AddressInfo).port}/`);
    expect([answer.status, answer.headers["x-plain"], answer.text]).toEqual([201, "yes", "ab"]);
  } finally {
    plain.close();
  }
});
