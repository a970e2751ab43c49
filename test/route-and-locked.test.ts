/**
 * A route locked by an adapter that calls a `@Locked` method on the same resource: the method runs
 * under the request's lock instead of contending with it (DESIGN.md: `@Locked` is re-entrant within
 * one async call chain, and the request's handling is that chain). Run on Express, Koa, Fastify and
 * Hono, against three real redis-server processes.
 */
import diagnosticsChannel from "node:diagnostics_channel";
import { type AcquireMessage, type Lock, LockContentionError, Redlock } from "@redlock-kit/core";
import { Locked } from "@redlock-kit/decorators";
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildApp, type Framework } from "./helpers/http-apps.js";
import { send } from "./helpers/http-client.js";
import { useRedisServers } from "./helpers/redis-servers.js";

const cluster = useRedisServers(3);
let direct: Redis[] = [];
let dlm: Redlock;

beforeAll(() => {
  direct = cluster.servers.map((server) => server.client());
  dlm = new Redlock(direct, { retryCount: 0 });
});

afterEach(async () => {
  await Promise.all(direct.map((client) => client.flushall()));
});

/** Decorates `method` the experimentalDecorators way, which needs no compiler flag to call by hand. */
function locked<R>(
  key: string,
  options: Parameters<typeof Locked>[1],
  method: (arg: string) => Promise<R>,
): (arg: string) => Promise<R> {
  const target = { method };
  const descriptor = Object.getOwnPropertyDescriptor(target, "method") as TypedPropertyDescriptor<typeof method>;
  Locked(key, options)(target, "method", descriptor);
  return descriptor.value as typeof method;
}

/** The acquisitions attempted on `resource` (diagnostics), so that a test sees who locked what. */
function countAcquisitions(resource: string) {
  const outcomes: AcquireMessage["outcome"][] = [];
  const listen = (message: unknown) => {
    if ((message as AcquireMessage).resources.includes(resource)) outcomes.push((message as AcquireMessage).outcome);
  };
  diagnosticsChannel.subscribe("redlock-kit:acquire", listen);
  return { outcomes, stop: () => diagnosticsChannel.unsubscribe("redlock-kit:acquire", listen) };
}

const frameworks: Framework[] = ["express", "koa", "fastify", "hono"];

describe.each(frameworks)("a route lock and @Locked on the same key through %s", (framework) => {
  it("the method called while handling the request runs under the request's lock, without a second acquisition", async () => {
    const seen: (string | null | undefined)[] = [];
    const pay = locked("order:{0}", { redlock: dlm }, async (orderId: string) => {
      seen.push(await direct[0]?.get(`order:${orderId}`));
      return { paid: orderId };
    });
    let routeLock: Lock | undefined;
    const app = await buildApp[framework](dlm, [
      {
        method: "post",
        path: "/orders/:id/pay",
        key: "order:{params.id}",
        handler: async (lock) => {
          routeLock = lock;
          return { json: await pay("7") };
        },
      },
    ]);
    const acquisitions = countAcquisitions("order:7");
    try {
      const answer = await send(`${app.url}/orders/7/pay`, { method: "POST" });
      expect(answer.status).toBe(200);
      expect(JSON.parse(answer.text)).toEqual({ paid: "7" });
      // one acquisition (the route's); the method saw the route's value in Redis
      expect(acquisitions.outcomes).toEqual(["acquired"]);
      expect(seen).toEqual([routeLock?.value]);
    } finally {
      acquisitions.stop();
      await app.close();
    }
  });

  it("a method on another key still locks, and the same method outside a request still contends", async () => {
    const reserve = locked("stock:{0}", { redlock: dlm }, async (sku: string) => sku);
    const pay = locked("order:{0}", { redlock: dlm }, async (orderId: string) => orderId);
    const app = await buildApp[framework](dlm, [
      {
        method: "post",
        path: "/orders/:id/pay",
        key: "order:{params.id}",
        handler: async () => ({ json: { sku: await reserve("a-1") } }),
      },
    ]);
    const acquisitions = countAcquisitions("stock:a-1");
    try {
      expect((await send(`${app.url}/orders/8/pay`, { method: "POST" })).status).toBe(200);
      expect(acquisitions.outcomes).toEqual(["acquired"]);
      // not inside the request: the route's lock (held here by hand) is another owner's
      const holder = await dlm.acquire("order:9", 5000);
      await expect(pay("9")).rejects.toBeInstanceOf(LockContentionError);
      await holder.release();
    } finally {
      acquisitions.stop();
      await app.close();
    }
  });
});
