/**
 * The HTTP policy serving a Node `ServerResponse` (ResponseTracker) when the request was already
 * over before the route asked for its lock, or became so while it waited: an earlier step of the
 * request awaited (an auth check, a session lookup) and meanwhile the client left or another step
 * finished the response. The lock must neither outlive the request nor let the handler run.
 */
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import net from "node:net";
import { PassThrough, Readable } from "node:stream";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { arrival, countLockEvents, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createHttpLockPolicy, Redlock } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
let server: http.Server;
let port: number;
/** What the test does with the next request, given its response. */
let onRequest: (res: http.ServerResponse) => void = () => {};

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  server = http.createServer((_req, res) => onRequest(res)).listen(0, "127.0.0.1");
  await once(server, "listening");
  port = (server.address() as AddressInfo).port;
});

afterEach(async () => {
  await redis.flushall();
});

afterAll(async () => {
  server.close();
  await dlm?.quit();
});

const source = { params: {}, query: {}, body: undefined, headers: {} };
// a lock that would be extended for a minute if the route kept it
const policy = () => createHttpLockPolicy(dlm, { ttl: 2000, maxHoldMs: 60_000 });

/**
 * Begins `resource`'s route for a request that is over already: nothing is locked, not even for a
 * moment (a live request for the key would be refused meanwhile), and the handler does not run.
 */
async function beginOver(resource: string, res: http.ServerResponse): Promise<void> {
  const events = countLockEvents((name) => name === resource);
  const outcome = await policy().route(resource).begin(source, res);
  events.stop();
  expect(outcome.kind).toBe("aborted");
  expect({ acquired: events.acquired, releaseCalls: events.releaseCalls }).toEqual({ acquired: 0, releaseCalls: 0 });
  expect(await redis.exists(resource)).toBe(0);
}

/** Sends a request and hands its response to `handle`; the socket is returned to the test. */
function request(handle: (res: http.ServerResponse) => void): Promise<net.Socket> {
  onRequest = handle;
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
      resolve(socket);
    });
    socket.on("error", () => {});
  });
}

describe("ResponseTracker: a request that is over before its route's lock", () => {
  it("a client that left before the route asked: nothing is locked and the handler does not run", async () => {
    let res!: http.ServerResponse;
    const socket = await request((r) => {
      res = r;
    });
    await expect.poll(() => res !== undefined).toBe(true);
    socket.destroy();
    await once(res, "close");
    await beginOver("rt:left", res);
  });

  it("a response another step finished before the route asked: nothing is locked and the handler does not run", async () => {
    let res!: http.ServerResponse;
    const socket = await request((r) => {
      res = r;
      r.end("answered by a timeout");
    });
    await expect.poll(() => res?.writableFinished === true).toBe(true);
    await beginOver("rt:answered", res);
    socket.destroy();
  });

  it("a response another step finished while the route waited: the lock it then gets is given back and the handler does not run", async () => {
    const holder = await dlm.acquire("rt:waited", 5000);
    let res!: http.ServerResponse;
    const socket = await request((r) => {
      res = r;
    });
    await expect.poll(() => res !== undefined).toBe(true);
    const pending = createHttpLockPolicy(dlm, { ttl: 60_000, wait: 5000 }).route("rt:waited").begin(source, res);
    res.end("answered by a timeout");
    await once(res, "finish");
    await holder.release();
    expect((await pending).kind).toBe("aborted");
    await expect.poll(() => redis.exists("rt:waited")).toBe(0);
    socket.destroy();
  });
});

/**
 * Sends two requests pipelined on one connection and resolves with both responses once the server
 * has them: the second is queued behind the first (no socket of its own until the first finished).
 */
async function pipelinedPair(): Promise<{
  socket: net.Socket;
  first: http.ServerResponse;
  second: http.ServerResponse;
}> {
  const responses: http.ServerResponse[] = [];
  onRequest = (res) => responses.push(res);
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  await once(socket, "connect");
  socket.write("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".repeat(2));
  await expect.poll(() => responses.length).toBe(2);
  const [first, second] = responses as [http.ServerResponse, http.ServerResponse];
  return { socket, first, second };
}

describe("ResponseTracker: a response another step ended that is not sent yet", () => {
  it("ended while the route waited, queued behind an earlier response: the lock it then gets is given back and the handler does not run", async () => {
    const holder = await dlm.acquire("rt:queued", 5000);
    const { socket, first, second } = await pipelinedPair();
    expect(second.socket).toBeNull();
    const pending = createHttpLockPolicy(dlm, { ttl: 60_000, wait: 5000 }).route("rt:queued").begin(source, second);
    // a timeout's answer: ended, but it cannot be sent before the first response has finished
    second.end("answered by a timeout");
    expect(second.writableFinished).toBe(false);
    await holder.release();
    expect((await pending).kind).toBe("aborted");
    await expect.poll(() => redis.exists("rt:queued")).toBe(0);
    first.end();
    socket.destroy();
  });

  it("ended before the route asked, queued behind an earlier response: nothing is locked and the handler does not run", async () => {
    const { socket, first, second } = await pipelinedPair();
    second.end("answered by a timeout");
    expect(second.writableFinished).toBe(false);
    await beginOver("rt:queued-early", second);
    first.end();
    socket.destroy();
  });
});

describe("HeldRoute: a dropped body stopped because its client left", () => {
  it("takes the end the framework writes after that for no end of the handler: the lock lapses, not released", async () => {
    const responded = new Promise<http.ServerResponse>((resolve) => {
      void request(resolve).then((socket) => leaving.then(() => socket.destroy()));
    });
    let leave = () => {};
    const leaving = new Promise<void>((resolve) => {
      leave = resolve;
    });
    const res = await responded;
    // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
    const outcome = await createHttpLockPolicy(dlm, { ttl: 500, instanceTimeout: 300 })
      .route("dropped-left:1")
      .begin(source, res);
    if (outcome.kind !== "acquired") throw new Error(`not acquired: ${outcome.kind}`);
    // a HEAD request's endless body, read while the answer waits for its end (Koa, Nest)
    const body = new PassThrough();
    body.write("data: 1\n\n");
    const drained = outcome.held.followDropped(body);
    // releasedOrExpired, with the source's Lock (the helpers type the built core)
    const ended = Promise.race([
      nextRelease("dropped-left:1").then(() => "released"),
      aborted(outcome.lock.signal).then(() => "expired"),
    ]);
    leave();
    await arrival(drained as Promise<void>, "the dropped body's end");
    expect(body.destroyed).toBe(true);
    // what the framework then writes for its answer: its producer may still run
    res.end();
    expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
  });
});

describe("HeldRoute.followHandedOn: a payload the framework would drop and answer at once (Fastify's HEAD, its 204)", () => {
  it("resolves with what to hand on only at the body's end (a web stream as the drained Node stream), a plain payload at once; the lock is released after both ends", async () => {
    let connected: Promise<net.Socket> | undefined;
    const responded = new Promise<http.ServerResponse>((resolve) => {
      connected = request(resolve);
    });
    const res = await responded;
    const outcome = await policy().route("handed-on:1").begin(source, res);
    if (outcome.kind !== "acquired") throw new Error(`not acquired: ${outcome.kind}`);
    expect(await outcome.held.followHandedOn('{"id":1}')).toBe('{"id":1}');
    let push: ReadableStreamDefaultController<Uint8Array> | undefined;
    const web = new ReadableStream<Uint8Array>({
      start: (controller) => {
        push = controller;
        controller.enqueue(new Uint8Array(8));
      },
    });
    const handedOn = outcome.held.followHandedOn(web);
    push?.close();
    // handed on at once, Fastify would answer before the body's end: a client leaving then is not seen
    const body = (await handedOn) as PassThrough;
    expect(body).toBeInstanceOf(Readable);
    expect(body.readableEnded).toBe(true);
    expect(await redis.exists("handed-on:1")).toBe(1);
    const released = nextRelease("handed-on:1");
    res.end();
    expect((await arrival(released, "the release")).released).toBe(true);
    (await connected)?.destroy();
  });
});

describe("HeldRoute.running: whether a followed run has not settled (a request's run again must not enter beside it)", () => {
  it("is true while a followed run is pending, and false already when the framework sees that run end, failed or not", async () => {
    let connected: Promise<net.Socket> | undefined;
    const responded = new Promise<http.ServerResponse>((resolve) => {
      connected = request(resolve);
    });
    const res = await responded;
    const outcome = await policy().route("running:1").begin(source, res);
    if (outcome.kind !== "acquired") throw new Error(`not acquired: ${outcome.kind}`);
    const { held } = outcome;
    expect(held.running).toBe(false);
    let fail!: (error: Error) => void;
    const failing = held.follow(
      new Promise<never>((_resolve, reject) => {
        fail = reject;
      }),
    );
    let end!: () => void;
    const ending = held.follow(
      new Promise<void>((resolve) => {
        end = resolve;
      }),
    );
    expect(held.running).toBe(true);
    fail(new Error("transient"));
    // what the framework awaits: a retry it starts from here finds that run settled, the other not
    await expect(failing).rejects.toThrow("transient");
    expect(held.running).toBe(true);
    end();
    await ending;
    expect(held.running).toBe(false);
    // the response still holds the lock; its end releases it
    expect(await redis.exists("running:1")).toBe(1);
    const released = nextRelease("running:1");
    res.end();
    expect((await arrival(released, "the release")).released).toBe(true);
    (await connected)?.destroy();
  });
});
