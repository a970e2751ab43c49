/**
 * Redis answers that are neither "yes" nor "held by another owner": a lock key holding a hash
 * (WRONGTYPE), a foreign key without expiry at a lock's name, a master demoted to replica
 * (READONLY), a server loading its dataset (LOADING). Each gets the outcome that tells the operator
 * what is wrong, and nothing of anyone else's is deleted.
 */
import diagnosticsChannel from "node:diagnostics_channel";
import {
  type AcquireMessage,
  type ExtendMessage,
  LockConfigurationError,
  LockContentionError,
  LockLostError,
  LockUnavailableError,
  Redlock,
} from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { buildApp, type Framework } from "../helpers/http-apps.js";
import { send } from "../helpers/http-client.js";
import { useInvariants } from "../helpers/invariants.js";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";
import { warmUp } from "../helpers/warm-up.js";

// three lock servers and a fourth that only serves as the master the others are demoted to
const cluster = useRedisServers(4);
const invariants = useInvariants(cluster, { maxTtlMs: 2000, lockServers: (servers) => servers.slice(0, 3) });
let direct: Redis[] = [];
/** Long enough that its per-instance timeout (1 s) covers a busy machine: an answer, not a timeout, must decide. */
const TTL = 10_000;
let master: Redis;

beforeAll(async () => {
  const clients = cluster.servers.map((server) => server.client());
  direct = clients.slice(0, 3);
  master = clients[3] as Redis;
  // replicas sync at once, not after the default 5 s wait for more replicas to join
  await master.config("SET", "repl-diskless-sync-delay", "0");
  await warmUp(new Redlock(direct), { quit: true });
});

const valuesOf = (key: string) => Promise.all(direct.map((client) => client.get(key)));

/** The acquire diagnostics of `resource` while `fn` runs. */
async function acquireMessages<T>(resource: string, fn: () => Promise<T>): Promise<[T, AcquireMessage[]]> {
  const messages: AcquireMessage[] = [];
  const listen = (message: unknown) => {
    if ((message as AcquireMessage).resources.includes(resource)) messages.push(message as AcquireMessage);
  };
  diagnosticsChannel.subscribe("redlock-kit:acquire", listen);
  try {
    return [await fn(), messages];
  } finally {
    diagnosticsChannel.unsubscribe("redlock-kit:acquire", listen);
  }
}

describe("a hash at the lock's key (WRONGTYPE)", () => {
  it("is a LockConfigurationError (500) after one attempt, not an outage (503) after every retry; the hash stays", async () => {
    await Promise.all(direct.map((client) => client.hset("profile:7", "name", "someone else's data")));
    const dlm = invariants.track(new Redlock(direct, { retryCount: 3, retryDelay: 50 }));
    const [error, messages] = await acquireMessages("profile:7", () =>
      dlm.lock("profile:7", TTL).catch((e: unknown) => e),
    );
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect(error).not.toBeInstanceOf(LockUnavailableError);
    const misconfigured = error as LockConfigurationError;
    expect(misconfigured.status).toBe(500);
    expect(misconfigured.code).toBe("ERR_REDLOCK_CONFIG");
    expect(misconfigured.body).toEqual({ error: "Lock service misconfigured" });
    expect(misconfigured.instances).toEqual([0, 1, 2]);
    expect(misconfigured.resources).toEqual(["profile:7"]);
    expect(misconfigured.message).toMatch(/WRONGTYPE.*keyPrefix/);
    expect(messages.map((m) => m.attempts)).toEqual([1]);
    for (const client of direct) expect(await client.hgetall("profile:7")).toEqual({ name: "someone else's data" });
    await Promise.all(direct.map((client) => client.del("profile:7")));
  });

  it("on one instance of three costs that vote only: the lock is taken on the other two", async () => {
    await direct[0]?.hset("shared:1", "field", "x");
    try {
      const dlm = invariants.track(new Redlock(direct, { retryCount: 0 }));
      const lock = await dlm.acquire("shared:1", TTL);
      expect(await Promise.all(direct.slice(1).map((client) => client.get("shared:1")))).toEqual([
        lock.value,
        lock.value,
      ]);
      await lock.release();
      expect(await direct[0]?.hget("shared:1", "field")).toBe("x");
    } finally {
      await direct[0]?.del("shared:1");
    }
  });

  it.each<Framework>(["express", "koa", "fastify"])("answers 500 JSON with no detail through %s", async (framework) => {
    await Promise.all(direct.map((client) => client.hset("order:9", "total", "12")));
    const dlm = invariants.track(new Redlock(direct, { retryCount: 0 }));
    let ran = 0;
    const app = invariants.track(
      await buildApp[framework](dlm, [
        {
          method: "post",
          path: "/orders/:id",
          key: "order:{params.id}",
          handler: async () => {
            ran++;
            return { json: {} };
          },
        },
      ]),
    );
    const answer = await send(`${app.url}/orders/9`, { method: "POST" });
    expect(answer.status).toBe(500);
    expect(answer.text).toBe('{"error":"Lock service misconfigured"}');
    expect(answer.headers["retry-after"]).toBeUndefined();
    expect(ran).toBe(0);
    await Promise.all(direct.map((client) => client.del("order:9")));
  });
});

describe("a foreign key without expiry at the lock's name", () => {
  it("is contention (423) with the lock's ttl as Retry-After, and is never deleted", async () => {
    await Promise.all(direct.map((client) => client.set("report", "another-tool")));
    const dlm = invariants.track(new Redlock(direct, { retryCount: 1, retryDelay: 20 }));
    expect(await dlm.lock("report", 5000)).toBeNull();
    const error = await dlm.acquire("report", 5000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockContentionError);
    expect((error as LockContentionError).retryAfterMs).toBe(5000);
    expect((error as LockContentionError).headers).toEqual({ "Cache-Control": "no-store", "Retry-After": "5" });
    expect(await valuesOf("report")).toEqual(["another-tool", "another-tool", "another-tool"]);
    expect(await Promise.all(direct.map((client) => client.pttl("report")))).toEqual([-1, -1, -1]);
    await Promise.all(direct.map((client) => client.del("report")));
  });

  it.each<Framework>(["express", "koa", "fastify"])("answers 423 with Retry-After: 3 through %s", async (framework) => {
    await Promise.all(direct.map((client) => client.set("export:1", "another-tool")));
    const dlm = invariants.track(new Redlock(direct, { retryCount: 0 }));
    const app = invariants.track(
      await buildApp[framework](dlm, [
        {
          method: "post",
          path: "/exports/:id",
          key: "export:{params.id}",
          options: { ttl: 3000 },
          handler: async () => ({ json: {} }),
        },
      ]),
    );
    const answer = await send(`${app.url}/exports/1`, { method: "POST" });
    expect(answer.status).toBe(423);
    expect(answer.headers["retry-after"]).toBe("3");
    expect(await valuesOf("export:1")).toEqual(["another-tool", "another-tool", "another-tool"]);
    await Promise.all(direct.map((client) => client.del("export:1")));
  });
});

/** Makes lock servers `nodes` replicas of the fourth server, runs `fn`, and makes them masters again. */
async function asReplicas<T>(nodes: number[], fn: () => Promise<T>): Promise<T> {
  const port = (cluster.servers[3] as RedisServer).port;
  const replicas = nodes.map((i) => direct[i] as Redis);
  await Promise.all(replicas.map((client) => client.replicaof("127.0.0.1", port)));
  try {
    for (const client of replicas) {
      while (!(await client.info("replication")).includes("master_link_status:up")) await sleep(20);
    }
    return await fn();
  } finally {
    await Promise.all(replicas.map((client) => client.replicaof("NO", "ONE")));
    await master.flushall();
  }
}

describe("a master demoted to replica (READONLY)", () => {
  it("on a majority: unavailable (503), from the READONLY answers, not contention", async () => {
    const dlm = invariants.track(new Redlock(direct, { retryCount: 0 }));
    const error = await asReplicas([1, 2], () => dlm.lock("demoted", TTL).catch((e: unknown) => e));
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect((error as LockUnavailableError).status).toBe(503);
    // the refusing path: both answered READONLY at once, neither timed out
    expect((error as LockUnavailableError).causes.map((c) => [c.instance, c.error.message.split(" ")[0]])).toEqual([
      [1, "READONLY"],
      [2, "READONLY"],
    ]);
    await expect.poll(() => valuesOf("demoted")).toEqual([null, null, null]);
  });

  it("under a held lock: auto-extension retries, then reports the loss before the validity ends", async () => {
    // the replicas keep the master's copy of our key until it expires
    invariants.faultInjected();
    const dlm = invariants.track(new Redlock(direct));
    const refused: boolean[] = [];
    const count = (message: unknown) => {
      if ((message as ExtendMessage).resources.includes("demoted:held"))
        refused.push(!(message as ExtendMessage).extended);
    };
    diagnosticsChannel.subscribe("redlock-kit:extend", count);
    const reason = await dlm.using("demoted:held", 1000, async (signal, lock) => {
      // the replicas copy the master's data: give it our key, so that the extension finds it ours
      // and fails on the write (READONLY), not on a missing key
      await master.set("demoted:held", lock.value, "PX", 1000);
      return asReplicas([1, 2], async () => {
        if (!signal.aborted) await new Promise((resolve) => signal.addEventListener("abort", resolve));
        expect(lock.valid).toBe(false);
        return signal.reason;
      });
    });
    diagnosticsChannel.unsubscribe("redlock-kit:extend", count);
    expect(reason).toBeInstanceOf(LockLostError);
    // more than one extension was tried and refused before the loss was reported
    expect(refused.filter(Boolean).length).toBeGreaterThanOrEqual(2);
  });
});

describe("a server loading its dataset (LOADING)", () => {
  it("on a majority: unavailable (503) from the LOADING answers, not contention", async () => {
    const loading = [1, 2].map((i) => cluster.servers[i] as RedisServer);
    const reloads: Promise<unknown>[] = [];
    try {
      for (const server of loading) {
        const client = server.client();
        await client.call("DEBUG", "POPULATE", "4000", "loading-filler");
        await client.config("SET", "key-load-delay", "200");
        await client.config("SET", "loading-process-events-interval-bytes", "1024");
        reloads.push(client.call("DEBUG", "RELOAD").finally(() => client.disconnect()));
      }
      for (const i of [1, 2]) {
        while (!(await (direct[i] as Redis).info("persistence")).includes("loading:1")) await sleep(5);
      }
      const dlm = invariants.track(new Redlock(direct, { retryCount: 0 }));
      const error = await dlm.lock("loading", TTL).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockUnavailableError);
      expect((error as LockUnavailableError).causes.map((c) => c.error.message.split(" ")[0])).toEqual([
        "LOADING",
        "LOADING",
      ]);
    } finally {
      await Promise.all(reloads);
      for (const i of [1, 2]) await (direct[i] as Redis).config("SET", "key-load-delay", "0");
      await Promise.all(direct.map((client) => client.flushall()));
    }
  }, 30_000);
});
