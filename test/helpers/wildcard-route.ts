/**
 * The checks of a wildcard route locked on `file:{…}` (Express's and Koa's `/files/*path`, Fastify's
 * `/files/*`), shared by the adapters' tests: the app's handler awaits `handle(path)` and answers
 * `{ path, resources }`, then `defineTests` declares the tests against the running app.
 */
import type { Redis } from "ioredis";
import { expect, it } from "vitest";
import { gate } from "./gate.js";
import { send } from "./http-client.js";

export function wildcardRoute() {
  /** Opened by the handler of the first `/files/a/b/c`, which then waits for `release`. */
  const entered = gate();
  const release = gate();
  const handled: string[] = [];
  return {
    release,
    async handle(path: string): Promise<void> {
      handled.push(path);
      if (path === "a/b/c" && handled.length === 1) {
        entered.open();
        await release.opened;
      }
    },
    /** `part` is the placeholder the key reads, named in the 400's body. */
    defineTests(part: string, app: () => { url: string; redis: Redis }): void {
      it("locks the wildcard's path: the same path contends (423), another does not", async () => {
        const { url, redis } = app();
        const first = send(`${url}/files/a/b/c`);
        // before the fix: the route failed at declaration, or answered 400 at once without running
        const state = await Promise.race([entered.opened.then(() => "holding"), first.then((answer) => answer.status)]);
        expect(state).toBe("holding");
        expect(await redis.keys("file:*")).toEqual(["file:a/b/c"]);

        expect((await send(`${url}/files/a/b/c`)).status).toBe(423);
        // %2F inside a segment names the same path: the same key, so it contends too
        expect((await send(`${url}/files/a%2Fb/c`)).status).toBe(423);
        const other = await send(`${url}/files/a/b/d`);
        expect(other.status).toBe(200);
        expect(JSON.parse(other.text)).toEqual({ path: "a/b/d", resources: ["file:a/b/d"] });

        release.open();
        const answer = await first;
        expect(answer.status).toBe(200);
        expect(JSON.parse(answer.text)).toEqual({ path: "a/b/c", resources: ["file:a/b/c"] });
        expect(await redis.keys("file:*")).toEqual([]);
        expect(handled).toEqual(["a/b/c", "a/b/d"]);
      });

      it.each([
        "/files/a//b",
        "/files//a",
        "/files/a/",
        "/files/a/./b",
        "/files/a/../b",
        "/files/%2E",
        "/files/a/%2E%2E/b",
        "/files/a%2F%2E%2E/b",
      ])(
        "answers 400 to %s, whose empty or dot segment would lock a path that another spelling locks under another key",
        async (path) => {
          const { url, redis } = app();
          // sent as written: a URL would have its dot segments resolved by the client
          const answer = await send(url, { path });
          expect(answer.status).toBe(400);
          expect(JSON.parse(answer.text)).toEqual({
            error: `Lock key part "${part}" has an empty, "." or ".." path segment`,
          });
          expect(await redis.keys("file:*")).toEqual([]);
        },
      );
    },
  };
}
