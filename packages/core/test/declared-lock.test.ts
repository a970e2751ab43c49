/**
 * The one resolver of a declared lock's options (an HTTP route, a `@Locked` method): defaults,
 * what passes through to Redlock, and the checks, all at declaration.
 */
import { describe, expect, it } from "vitest";
import { DECLARED_LOCK_KEYS, resolveDeclaredLock } from "../src/index.js";

describe("resolveDeclaredLock", () => {
  it("gives a ttl of 5000 ms and a wait of 0 when nothing is set, frozen", () => {
    const declared = resolveDeclaredLock(undefined);
    expect(declared).toEqual({ ttl: 5000, acquire: { wait: 0 }, hold: {} });
    expect(Object.isFrozen(declared)).toBe(true);
    expect(Object.isFrozen(declared.acquire)).toBe(true);
    expect(Object.isFrozen(declared.hold)).toBe(true);
  });

  it("passes on exactly the acquire and hold options that were set", () => {
    const declared = resolveDeclaredLock({
      ttl: 2000,
      wait: 300,
      driftFactor: 0.02,
      retryDelay: 10,
      retryJitter: 5,
      instanceTimeout: 100,
      fencing: true,
      extendThreshold: 0.6,
      maxHoldMs: 9000,
    });
    expect(declared).toEqual({
      ttl: 2000,
      acquire: { wait: 300, driftFactor: 0.02, retryDelay: 10, retryJitter: 5, instanceTimeout: 100, fencing: true },
      hold: { extendThreshold: 0.6, maxHoldMs: 9000 },
    });
    expect([...DECLARED_LOCK_KEYS].sort()).toEqual(
      [
        "ttl",
        "wait",
        "driftFactor",
        "retryDelay",
        "retryJitter",
        "instanceTimeout",
        "fencing",
        "extendThreshold",
        "maxHoldMs",
      ].sort(),
    );
  });

  it("lays the options over a base, and undefined never overrides it", () => {
    const base = resolveDeclaredLock({ ttl: 3000, wait: 100, maxHoldMs: 8000 }, "defaults");
    const route = resolveDeclaredLock({ ttl: undefined, wait: undefined, retryDelay: 20 }, "options", base);
    expect(route).toEqual({ ttl: 3000, acquire: { wait: 100, retryDelay: 20 }, hold: { maxHoldMs: 8000 } });
  });

  it("refuses a bad option at declaration, naming it", () => {
    expect(() => resolveDeclaredLock({ ttl: 0.5 }, "route")).toThrow(/^route\.ttl must be/);
    expect(() => resolveDeclaredLock({ wait: -1 })).toThrow(/^options\.wait must be/);
    expect(() => resolveDeclaredLock({ ttl: 4, driftFactor: 0.49 })).toThrow(RangeError);
    // null is no "not set": it was a ttl of 5000 ms (or the base's), while every other option refused it
    expect(() => resolveDeclaredLock({ ttl: null as never }, "route")).toThrow(
      new TypeError("route.ttl must be a positive integer of milliseconds below 2^31, got null"),
    );
  });
});
