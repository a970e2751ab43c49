import type { Lock, RedlockError } from "@redlock-kit/core";
import type { Request, RequestHandler, Response } from "express";
import { describe, expectTypeOf, it } from "vitest";
import type { createRedlockMiddleware, ExpressLockHook } from "../src/index.js";

// Checked by `tsc -p tsconfig.json` at the root; at run time these are no-ops.
describe("Express types", () => {
  it("types req.lock by declaration merging", () => {
    expectTypeOf<Request["lock"]>().toEqualTypeOf<Lock | undefined>();
  });

  it("returns route middleware from redlock(key, options) and types the hooks", () => {
    type Factory = ReturnType<typeof createRedlockMiddleware>;
    expectTypeOf<ReturnType<Factory>>().toEqualTypeOf<RequestHandler>();
    expectTypeOf<Parameters<ExpressLockHook>>().toEqualTypeOf<[Request, Response, RedlockError]>();
    expectTypeOf<Parameters<Factory>[1]>().toMatchTypeOf<
      { ttl?: number; wait?: number; fencing?: boolean } | undefined
    >();
    expectTypeOf<NonNullable<Request["lock"]>["fence"]>().toEqualTypeOf<string | undefined>();
  });
});
