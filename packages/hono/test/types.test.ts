import type { Lock, RedlockError } from "@redlock-kit/core";
import type { Context, Hono, MiddlewareHandler } from "hono";
import { describe, expectTypeOf, it } from "vitest";
import type { createRedlockMiddleware, HonoLockHook, RedlockEnv } from "../src/index.js";

type Factory = ReturnType<typeof createRedlockMiddleware>;

// Checked by `tsc -p tsconfig.json` at the root; at run time these are no-ops.
describe("Hono types", () => {
  it("types c.var.lock in a handler declared after the middleware", () => {
    const declare = (app: Hono, redlock: Factory) => {
      app.post("/orders/:id/pay", redlock("order:{params.id}"), (c) => {
        expectTypeOf(c.var.lock).toEqualTypeOf<Lock>();
        expectTypeOf(c.get("lock")).toEqualTypeOf<Lock>();
        return c.json({ paid: c.req.param("id") });
      });
    };
    expectTypeOf(declare).toBeFunction();
  });

  it("returns Hono middleware from redlock(key, options) and types the hooks", () => {
    expectTypeOf<ReturnType<Factory>>().toEqualTypeOf<MiddlewareHandler<RedlockEnv>>();
    expectTypeOf<Parameters<HonoLockHook>>().toEqualTypeOf<[Context, RedlockError]>();
    expectTypeOf<ReturnType<HonoLockHook>>().toEqualTypeOf<Response | Promise<Response>>();
    expectTypeOf<Parameters<Factory>[1]>().toMatchTypeOf<{ ttl?: number; wait?: number } | undefined>();
  });
});
