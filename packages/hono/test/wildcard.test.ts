/**
 * Hono takes the rest of a path with a regex parameter: `/files/:path{.+}` on `/files/a//b` sets
 * `c.req.param("path")` to `"a//b"`. The middleware hands a template such a parameter as its list of
 * segments, as Express 5 gives a wildcard, so `/files/a//b` is refused (400) rather than locked
 * under another key than `/files/a/b`, and `/files/a%2Fb/c` locks `file:a/b/c` like `/files/a/b/c`.
 * @hono/node-server resolves dot segments (`/files/a/./b` is `/files/a/b`) before the app routes.
 */
import { type Context, Hono } from "hono";
import { describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { useWildcardApp } from "#test-helpers/wildcard-route.js";
import { createRedlockMiddleware, type RedlockEnv } from "../src/index.js";
import { withPathLists } from "../src/path-params.js";
import { serveHono } from "./serve.js";

const served = useWildcardApp(
  "params.path",
  async (dlm, handle) => {
    const redlock = createRedlockMiddleware(dlm, { ttl: 10_000 });
    const app = new Hono();
    app.get("/files/:path{.+}", redlock("file:{params.path}"), async (c) => {
      const path = c.req.param("path");
      await handle(path);
      return c.json({ path, resources: c.var.lock.resources });
    });
    // parameters that are not paths: a plain one, and regexes that take no "/"
    const locked = (c: Context<RedlockEnv>) => c.json({ resources: c.var.lock.resources });
    app.get("/docs/:name", redlock("doc:{params.name}"), locked);
    app.get("/names/:name{[^/]+}", redlock("name:{params.name}"), locked);
    app.get("/orders/:id{[0-9]+}", redlock("order:{params.id}"), locked);
    // a key function gets the parameter as the handler does: one string
    app.get(
      "/raw/:path{.+}",
      redlock((source) => `raw:${JSON.stringify(source.params)}`),
      locked,
    );
    // mounted: the matched route's path is the whole one, `/api/:tenant/files/:path{.+}/meta`
    const sub = new Hono().basePath("/:tenant");
    sub.get("/files/:path{.+}/meta", redlock("meta:{params.tenant}:{params.path}"), locked);
    app.route("/api", sub);
    return serveHono(app);
  },
  { resolvesDotSegments: true },
);

async function resources(path: string): Promise<unknown> {
  const answer = await send(served.url, { path });
  expect(answer.status, answer.text).toBe(200);
  return (JSON.parse(answer.text) as { resources: unknown }).resources;
}

describe("parameters that are not paths", () => {
  it("reads a plain :name and a regex that takes no '/' as the string they are, '%2F..' included", async () => {
    expect(await resources("/docs/a%2F..%2Fb")).toEqual(["doc:a/../b"]);
    expect(await resources("/names/a%2F..%2Fb")).toEqual(["name:a/../b"]);
    expect(await resources("/orders/42")).toEqual(["order:42"]);
  });

  it("hands a key function the string, as c.req.param() gives it", async () => {
    expect(await resources("/raw/a//b")).toEqual(['raw:{"path":"a//b"}']);
  });
});

describe("a path parameter of a route mounted with app.route() under a basePath", () => {
  it("locks the joined path and refuses an empty or dot segment (400)", async () => {
    expect(await resources("/api/t1/files/a%2Fb/c/meta")).toEqual(["meta:t1:a/b/c"]);
    for (const path of ["/api/t1/files/a//b/meta", "/api/t1/files/a%2F%2E%2E/b/meta"]) {
      const answer = await send(served.url, { path });
      expect(answer.status, path).toBe(400);
      expect(JSON.parse(answer.text)).toEqual({
        error: 'Lock key part "params.path" has an empty, "." or ".." path segment',
      });
    }
    expect(await served.redis.keys("meta:*")).toEqual([]);
  });
});

describe("withPathLists", () => {
  const route = (routePath: string) => ({ routePath });

  it("gives a path parameter that is a dot segment as a list, which core refuses", () => {
    // no URL that a WHATWG parser built carries one: a runtime that does not resolve them could
    expect(withPathLists({ path: ".." }, route("/files/:path{.+}"))).toEqual({ path: [".."] });
    expect(withPathLists({ v: ".." }, route("/v/:v{[0-9.]+}"))).toEqual({ v: ".." });
  });

  it("takes a regex as a path when it matches 'a/b' or the value itself", () => {
    expect(withPathLists({ f: "a/b.png" }, route("/img/:f{.+\\.png}"))).toEqual({ f: ["a", "b.png"] });
    expect(withPathLists({ f: "a/b" }, route("/img/:f{[^/]+}"))).toEqual({ f: "a/b" });
    expect(withPathLists({ n: "1/2", p: "x/y" }, route("/:n{[0-9]+/[0-9]+}/:p{.*}"))).toEqual({
      n: ["1", "2"],
      p: ["x", "y"],
    });
  });
});
