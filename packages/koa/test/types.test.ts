import { Router } from "@koa/router";
import type { Lock, Redlock, RedlockError } from "@redlock-kit/core";
import type { ParameterizedContext } from "koa";
import { describe, expectTypeOf, it } from "vitest";
import { createRedlockMiddleware, type KoaLockHook } from "../src/index.js";

// Checked by `tsc -p tsconfig.json` at the root; at run time these are no-ops.
describe("Koa types", () => {
  it("types ctx.state.lock by augmenting koa's DefaultState", () => {
    expectTypeOf<ParameterizedContext["state"]["lock"]>().toEqualTypeOf<Lock | undefined>();
  });

  it("fits @koa/router routes, where the handler sees ctx.state.lock and ctx.params", () => {
    const declare = (dlm: Redlock) => {
      const redlock = createRedlockMiddleware(dlm, { ttl: 1000 });
      new Router().post("/orders/:id/pay", redlock("order:{params.id}", { wait: 2000, fencing: true }), (ctx) => {
        expectTypeOf(ctx.state.lock).toEqualTypeOf<Lock | undefined>();
        expectTypeOf(ctx.state.lock?.fence).toEqualTypeOf<string | undefined>();
        expectTypeOf(ctx.params).toEqualTypeOf<Record<string, string>>();
      });
    };
    expectTypeOf(declare).toBeFunction();
    expectTypeOf<Parameters<KoaLockHook>>().toEqualTypeOf<[ParameterizedContext, RedlockError]>();
  });
});
