import http from "node:http";
import type { AddressInfo } from "node:net";
import { LockContentionError, LockKeyError, LockLostError, LockUnavailableError, Redlock } from "@redlock-kit/core";
import express from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware, redlockErrorHandler } from "../src/index.js";

const cluster = useRedisServers(1);
let server: http.Server;
let url: string;
let dlm: Redlock;
/** What reached the error handler after redlockErrorHandler. */
let passedOn: unknown;

/** What the service under each route throws. */
const thrown: Record<string, () => Error> = {
  contention: () => new LockContentionError(["order:1"], 2500),
  unavailable: () =>
    new LockUnavailableError(["order:1"], [{ instance: 0, error: new Error("connect ECONNREFUSED 10.0.0.7:6379") }]),
  key: () => new LockKeyError('Lock key part "params.id" is missing', "params.id"),
  lost: () => new LockLostError(["order:1"]),
  other: () => new Error("secret database detail"),
};

beforeAll(async () => {
  dlm = new Redlock(cluster.servers.map((redis) => redis.client()));
  const redlock = createRedlockMiddleware(dlm);
  const app = express();
  app.set("env", "production");
  for (const [name, error] of Object.entries(thrown)) {
    app.post(`/throws/${name}`, async () => {
      throw error();
    });
  }
  app.post(
    "/hook-throws",
    redlock("held", {
      onLocked: () => {
        throw new Error("hook failed");
      },
    }),
    (_req, res) => {
      res.json({ ran: true });
    },
  );
  // a handler that set up the file it meant to send, then got a RedlockError from its service
  app.post("/throws-after-setup", async (_req, res) => {
    res.attachment("report.csv");
    res.set({ "content-encoding": "gzip", etag: '"v1"', location: "/reports/1", "x-kept": "yes" });
    throw thrown.contention?.();
  });
  app.post("/headers-sent", (_req, res) => {
    res.write("partial");
    throw thrown.contention?.();
  });
  app.use(redlockErrorHandler());
  app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    passedOn = error;
    if (res.headersSent) res.end();
    else res.status(500).json({ fallback: error.message });
  });
  server = http.createServer(app).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
});

describe("redlockErrorHandler", () => {
  it.each([
    ["contention", 423, { error: "Resource is locked" }, "3"],
    ["unavailable", 503, { error: "Lock service unavailable" }, undefined],
    ["key", 400, { error: 'Lock key part "params.id" is missing' }, undefined],
    ["lost", 409, { error: "Lock was lost" }, undefined],
  ])("answers a %s error thrown by a handler with %i and its JSON body", async (name, status, body, retryAfter) => {
    const answer = await send(`${url}/throws/${name}`, { method: "POST" });
    expect(answer.status).toBe(status);
    expect(answer.headers["content-type"]).toMatch(/^application\/json/);
    expect(JSON.parse(answer.text)).toEqual(body);
    expect(answer.headers["retry-after"]).toBe(retryAfter);
    expect(answer.text).not.toContain("10.0.0.7");
  });

  it("answers JSON without the headers a handler set for the answer it meant to send (its Content-Type, Content-Disposition, Content-Encoding, ETag, Location); others stay", async () => {
    const answer = await send(`${url}/throws-after-setup`, { method: "POST" });
    expect([answer.status, answer.text]).toEqual([423, '{"error":"Resource is locked"}']);
    const { "content-type": type, "x-kept": kept, "retry-after": retryAfter } = answer.headers;
    expect({ type, kept, retryAfter }).toEqual({
      type: "application/json; charset=utf-8",
      kept: "yes",
      retryAfter: "3",
    });
    const { "content-disposition": disposition, "content-encoding": encoding, location } = answer.headers;
    expect({ disposition, encoding, location }).toEqual({
      disposition: undefined,
      encoding: undefined,
      location: undefined,
    });
    // Express tags the JSON it sends itself
    expect(answer.headers.etag).not.toBe('"v1"');
  });

  it("passes any other error on to the next error handler", async () => {
    const answer = await send(`${url}/throws/other`, { method: "POST" });
    expect(answer.status).toBe(500);
    expect(JSON.parse(answer.text)).toEqual({ fallback: "secret database detail" });
  });

  it("passes on a RedlockError that comes after the headers went out", async () => {
    const answer = await send(`${url}/headers-sent`, { method: "POST" });
    expect(answer.status).toBe(200);
    expect(answer.text).toBe("partial");
    expect(passedOn).toBeInstanceOf(LockContentionError);
  });
});

describe("createRedlockMiddleware", () => {
  it("hands an error thrown by a hook to next(), as Express 4 needs", async () => {
    const holder = await dlm.acquire("held", 5000);
    try {
      const answer = await send(`${url}/hook-throws`, { method: "POST" });
      expect(answer.status).toBe(500);
      expect(JSON.parse(answer.text)).toEqual({ fallback: "hook failed" });
    } finally {
      await holder.release();
    }
  });

  it("refuses a bad option or a missing Redlock when the route is declared", () => {
    const redlock = createRedlockMiddleware(dlm, { ttl: 1000 });
    expect(() => redlock("order:{params.id}", { ttl: 0.5 })).toThrow(
      new RangeError("options.ttl must be a positive integer of milliseconds below 2^31, got 0.5"),
    );
    expect(() => redlock("order:{params.id")).toThrow(TypeError);
    expect(() => createRedlockMiddleware(undefined as unknown as Redlock)).toThrow(
      new TypeError("redlock must be a Redlock instance, got undefined"),
    );
  });
});
