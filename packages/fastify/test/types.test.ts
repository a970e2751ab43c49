import type { Lock, Redlock } from "@redlock-kit/core";
import type { FastifyContextConfig, FastifyInstance, FastifyRequest } from "fastify";
import { describe, expectTypeOf, it } from "vitest";
import type { RedlockRouteConfig } from "../src/index.js";

// Checked by `tsc -p tsconfig.json` at the root; at run time these are no-ops.
describe("Fastify types", () => {
  it("augments FastifyInstance, FastifyRequest and the route config", () => {
    expectTypeOf<FastifyInstance["redlock"]>().toEqualTypeOf<Redlock>();
    expectTypeOf<FastifyRequest["lock"]>().toEqualTypeOf<Lock | null>();
    expectTypeOf<FastifyContextConfig["redlock"]>().toEqualTypeOf<RedlockRouteConfig | undefined>();
  });

  it("accepts a key or { key, ...options } as config.redlock, and nothing without a key", () => {
    const declare = (app: FastifyInstance) => {
      app.post("/a", { config: { redlock: "order:{params.id}" } }, async (request) => request.lock?.resources);
      app.post("/b", { config: { redlock: { key: "x", ttl: 5000, wait: 500 } } }, async () => "ok");
      app.post("/f", { config: { redlock: { key: "x", fencing: true } } }, async (request) => request.lock?.fence);
      app.post("/c", { config: { redlock: (source) => `tenant:${String(source.headers)}` } }, async () => "ok");
      // @ts-expect-error a config without a key
      app.post("/d", { config: { redlock: { ttl: 5000 } } }, async () => "ok");
      // @ts-expect-error ttl is a number of milliseconds
      app.post("/e", { config: { redlock: { key: "x", ttl: "5s" } } }, async () => "ok");
    };
    expectTypeOf(declare).toBeFunction();
  });
});
