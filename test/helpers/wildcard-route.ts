/**
 * The checks of a wildcard route locked on `file:{…}` (Express's and Koa's `/files/*path`, Fastify's
 * `/files/*`, Hono's `/files/:path{.+}`), shared by the adapters' tests: `useWildcardApp` starts a
 * redis-server and a Redlock on it, has the adapter's test serve its app, whose handler awaits
 * `handle(path)` and answers `{ path, resources }`, and declares the tests against it.
 */
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "./gate.js";
import { send } from "./http-client.js";
import { useRedisServers } from "./redis.js";

/** Spellings with an empty segment, or a dot segment behind `%2F`: no URL parser resolves them. */
const EMPTY_SEGMENTS = ["/files/a//b", "/files//a", "/files/a/", "/files/a%2F%2E%2E/b"];
/** Dot segments (`%2E` too) that a WHATWG URL resolves: `/files/a/./b` is `/files/a/b` there. */
const DOT_SEGMENTS = ["/files/a/./b", "/files/a/../b", "/files/%2E", "/files/a/%2E%2E/b"];
/** `/files/a/b/c` spelled with dot segments, for a server that resolves them. */
const RESOLVED_SPELLINGS = ["/files/a/./b/c", "/files/a/x/../b/c", "/files/a/%2E/b/c", "/files/a/x/%2E%2E/b/c"];

export interface WildcardTestOptions {
  /**
   * The server resolves dot segments before the app routes the request, as a WHATWG URL does
   * (@hono/node-server builds the request's URL so): those spellings must then lock the path they
   * resolve to, and are not the adapter's to refuse.
   */
  resolvesDotSegments?: boolean;
}

function wildcardRoute() {
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
    defineTests(part: string, app: () => { url: string; redis: Redis }, options: WildcardTestOptions = {}): void {
      const resolvesDotSegments = options.resolvesDotSegments === true;
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
        if (resolvesDotSegments) {
          for (const path of RESOLVED_SPELLINGS) expect((await send(url, { path })).status, path).toBe(423);
        }
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

      it.each(resolvesDotSegments ? EMPTY_SEGMENTS : [...EMPTY_SEGMENTS, ...DOT_SEGMENTS])(
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

/** The served app: its base url, and a way to stop it. */
export interface ServedApp {
  url: string;
  close(): unknown;
}

/**
 * Declares the checks against the app `serve` builds on `dlm` (one redis-server) and serves: its
 * route `/files/…`, keyed `"file:{<part>}"`, awaits `handle(path)` in its handler. `part` is the
 * placeholder the key reads, named in the 400's body. The result gives the file's own tests the
 * running app's `url` and `redis`.
 */
export function useWildcardApp(
  part: string,
  serve: (dlm: Redlock, handle: (path: string) => Promise<void>) => Promise<ServedApp>,
  options?: WildcardTestOptions,
): { readonly url: string; readonly redis: Redis } {
  const cluster = useRedisServers(1);
  const wildcard = wildcardRoute();
  let running: { url: string; redis: Redis; dlm: Redlock; app?: ServedApp } | undefined;
  beforeAll(async () => {
    const redis = cluster.servers[0]?.client() as Redis;
    running = { url: "", redis, dlm: new Redlock([redis]) };
    running.app = await serve(running.dlm, (path) => wildcard.handle(path));
    running.url = running.app.url;
  });
  afterAll(async () => {
    wildcard.release.open();
    await running?.app?.close();
    await running?.dlm.quit();
  });
  const app = {
    get url() {
      return (running as { url: string }).url;
    },
    get redis() {
      return (running as { redis: Redis }).redis;
    },
  };
  wildcard.defineTests(part, () => app, options);
  return app;
}
