import "reflect-metadata";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { setDefaultRedlock } from "../src/index.js";
import { compileFixture, type DecoratorMode } from "./helpers/compile-fixture.js";

interface FeedModule {
  default: {
    createFeed(seen: (where: string) => Promise<unknown>): new () => { rows(id: string): unknown };
  };
}

const cluster = useRedisServers(1);
let client: Redis;
let dlm: Redlock;

beforeAll(() => {
  client = (cluster.servers[0] as RedisServer).client();
  dlm = new Redlock([client]);
  setDefaultRedlock(dlm);
});

afterAll(() => setDefaultRedlock(undefined));

for (const [mode, where] of [
  ["standard", "rows"],
  ["experimental", "Feed.rows"],
] as const satisfies [DecoratorMode, string][]) {
  describe(`an async generator method compiled below ES2018 (${mode} decorators)`, () => {
    let compiled: { module: FeedModule; emitted: string; cleanup(): void };
    beforeAll(async () => {
      compiled = await compileFixture<FeedModule>(
        new URL("./fixtures/downlevel-generators.ts", import.meta.url),
        mode,
        ts.ScriptTarget.ES2017,
      );
    }, 60_000);
    afterAll(() => compiled.cleanup());

    it("rejects the call with a TypeError naming it, never running the generator's body, and releases the lock", async () => {
      // the method is a plain function here: the check at decoration cannot see a generator
      expect(compiled.emitted).toContain("__asyncGenerator(");
      const ran: unknown[] = [];
      const Feed = compiled.module.default.createFeed(async (seen) => {
        ran.push([seen, await client.get("feed:1")]);
        return seen;
      });
      const outcome = await Promise.resolve(new Feed().rows("1")).then(
        async (rows) => {
          // before: the call resolved once the lock was released, and the body ran as rows were read
          for await (const row of rows as AsyncIterable<unknown>) ran.push(row);
          return "resolved";
        },
        (error: unknown) => error,
      );
      expect(outcome).toEqual(
        new TypeError(
          `@Locked method ${where} returned a generator object: its body would run after the lock is released`,
        ),
      );
      expect(ran).toEqual([]);
      expect(await client.dbsize()).toBe(0);
    });
  });
}
