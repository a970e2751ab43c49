import "reflect-metadata";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import type { DecoratorMode } from "./helpers/compile-fixture.js";
import { useLockedContext } from "./helpers/locked-context.js";
import { generatorRefused, readResult } from "./helpers/read-result.js";

interface FeedModule {
  default: {
    createFeed(seen: (where: string) => Promise<unknown>): new () => { rows(id: string): unknown };
  };
}

for (const [mode, where] of [
  ["standard", "rows"],
  ["experimental", "Feed.rows"],
] as const satisfies [DecoratorMode, string][]) {
  describe(`an async generator method compiled below ES2018 (${mode} decorators)`, () => {
    const context = useLockedContext<FeedModule>(
      new URL("./fixtures/downlevel-generators.ts", import.meta.url),
      mode,
      ts.ScriptTarget.ES2017,
    );

    it("rejects the call with a TypeError naming it, never running the generator's body, and releases the lock", async () => {
      // the method is a plain function here: the check at decoration cannot see a generator
      expect(context.emitted).toContain("__asyncGenerator(");
      const ran: unknown[] = [];
      const Feed = context.module.default.createFeed(async (seen) => {
        ran.push([seen, await context.values("feed:1")]);
        return seen;
      });
      // before: the call resolved once the lock was released, and the body ran as rows were read
      expect(await readResult(new Feed().rows("1"), ran)).toEqual(generatorRefused(where));
      expect(ran).toEqual([]);
      expect(await context.sizes()).toEqual([0, 0, 0]);
    });
  });
}
