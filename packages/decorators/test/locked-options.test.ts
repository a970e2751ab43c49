/** `@Locked`'s options are resolved by core's declared-lock resolver: the same defaults and checks as a route. */
import { describe, expect, it } from "vitest";
import { resolveLockedOptions } from "../src/locked-options.js";

describe("@Locked options", () => {
  it("is what @Locked resolves its options with", () => {
    expect(resolveLockedOptions(undefined)).toMatchObject({ ttl: 5000, using: { wait: 0 } });
    expect(resolveLockedOptions(1500)).toMatchObject({ ttl: 1500, using: { wait: 0 } });
    expect(resolveLockedOptions({ wait: 200, maxHoldMs: 7000 })).toMatchObject({
      ttl: 5000,
      using: { wait: 200, maxHoldMs: 7000 },
    });
    expect(() => resolveLockedOptions(0.5)).toThrow(/^ttl must be/);
  });
});
