/**
 * The error table of the public contract: each error a lock call rejects with extends RedlockError
 * and carries `status`, `statusCode`, `expose: true` and `headers` (`Cache-Control: no-store`), so
 * that Koa, Fastify and Express error handlers map it without glue; and its own fields.
 */
import { createServer, type Server, type Socket } from "node:net";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import {
  compileKey,
  LockContentionError,
  LockKeyError,
  LockLostError,
  LockUnavailableError,
  Redlock,
  RedlockError,
} from "../src/index.js";

const cluster = useRedisServers(1);
let client: Redis;
/** A port that accepts connections and never answers: an instance that is down for the library. */
let silent: Server;
const sockets = new Set<Socket>();

beforeAll(async () => {
  client = cluster.servers[0]?.client() as Redis;
  // the tests' single attempts with 1 s locks wait at most 100 ms for the client to say who it is
  await warmUp(new Redlock([client]), { quit: true });
  silent = createServer((socket) => {
    sockets.add(socket);
  });
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent.close(resolve));
});

const caught = (promise: Promise<unknown>) => promise.catch((error: unknown) => error);

function expectMapped(error: unknown, type: abstract new (...args: never[]) => RedlockError, status: number) {
  expect(error).toBeInstanceOf(type);
  expect(error).toBeInstanceOf(RedlockError);
  expect(RedlockError.isRedlockError(error)).toBe(true);
  const { status: own, statusCode, expose, headers } = error as RedlockError;
  expect({ status: own, statusCode, expose, cache: headers["Cache-Control"] }).toEqual({
    status,
    statusCode: status,
    expose: true,
    cache: "no-store",
  });
}

describe("the errors of a lock call", () => {
  it("contention: 423, with the resources and the holder's remaining ttl", async () => {
    await client.set("errors:held", "other", "PX", 60_000);
    // 500 ms per instance, not the 1 s lock's default 100 ms a loaded machine's Redis misses (503, not 423)
    const error = await caught(
      new Redlock([client], { retryCount: 0, instanceTimeout: 500 }).acquire("errors:held", 1000),
    );
    expectMapped(error, LockContentionError, 423);
    const { resources, retryAfterMs } = error as LockContentionError;
    expect(resources).toEqual(["errors:held"]);
    expect(retryAfterMs).toBeGreaterThan(1000);
    expect(retryAfterMs).toBeLessThanOrEqual(60_000);
  });

  it("no quorum could be asked: 503, with the per-instance causes", async () => {
    const port = (silent.address() as { port: number }).port;
    // two instances: a quorum needs both. 500 ms per instance: with 100 ms, a loaded machine's
    // answering Redis was counted among the causes too
    const dlm = new Redlock([client, { host: "127.0.0.1", port }], { retryCount: 0, instanceTimeout: 500 });
    const error = await caught(dlm.acquire("errors:down", 1000));
    await dlm.quit();
    expectMapped(error, LockUnavailableError, 503);
    const { causes } = error as LockUnavailableError;
    // the silent instance, with why it could not vote
    expect(causes.map(({ instance }) => instance)).toEqual([1]);
    expect(causes[0]?.error).toBeInstanceOf(Error);
  });

  it("a lost lock: 409", async () => {
    const lock = await new Redlock([client]).acquire("errors:lost", 5000);
    await client.set("errors:lost", "thief", "PX", 5000);
    expectMapped(await caught(lock.extend(5000)), LockLostError, 409);
  });

  it("a key that cannot be resolved: 400, naming the placeholder", () => {
    let error: unknown;
    try {
      compileKey("order:{params.id}")({ params: {} });
    } catch (e) {
      error = e;
    }
    expectMapped(error, LockKeyError, 400);
    expect((error as LockKeyError).path).toBe("params.id");
  });
});
