/**
 * One `Response` made once (at module level) and returned by a locked handler on every request.
 * Fetch bodies are read once: Hono's Fetch app alone serves such a Response once (the second
 * `app.request` gives a body already read), while @hono/node-server serves its own `Response`
 * (one made once its server runs) again and again, from the string it was built with. On the Fetch
 * path (no Node response) the middleware follows the body it returns: every request must get the
 * same answer, its lock released once that body has been read, as for the first.
 */
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { countReleases } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

/** `/locked` returns whatever `shared.locked` holds, under a lock on "shared"; `/plain`, `shared.plain`. */
function sharedApp() {
  const redlock = createRedlockMiddleware(bed.dlm, { ttl: 5000 });
  const shared = { locked: new Response(null), plain: new Response(null) };
  const app = new Hono();
  app.get("/locked", redlock("shared"), () => shared.locked);
  app.get("/plain", () => shared.plain);
  return { app, shared };
}

describe("a Response returned by a locked handler on every request", () => {
  it("gives every app.request (Fetch path, no Node server) the same answer, each lock released once", async () => {
    const { app, shared } = sharedApp();
    shared.locked = new Response("ok", { status: 201, headers: { "x-shared": "yes" } });
    const releases = countReleases("shared");
    for (let request = 1; request <= 3; request++) {
      const answer = await app.request("/locked");
      expect([answer.status, answer.headers.get("x-shared"), await answer.text()]).toEqual([201, "yes", "ok"]);
      await expect.poll(() => releases.count).toBe(request);
      expect(await bed.redis.exists("shared")).toBe(0);
    }
    releases.stop();
  });

  it("is served again and again by @hono/node-server without the Node response, as without the middleware", async () => {
    const { app, shared } = sharedApp();
    const server = await bed.serve(app, { nodeResponse: false });
    // made once the server runs: @hono/node-server's own Response, which it serves repeatedly
    const make = () => new Response("ok", { headers: { "x-shared": "yes" } });
    shared.locked = make();
    shared.plain = make();
    const releases = countReleases("shared");
    for (let request = 1; request <= 3; request++) {
      for (const route of ["plain", "locked"]) {
        const answer = await send(`${server.url}/${route}`);
        expect([route, answer.status, answer.headers["x-shared"], answer.text]).toEqual([route, 200, "yes", "ok"]);
      }
      await expect.poll(() => releases.count).toBe(request);
    }
    releases.stop();
  });

  // HEAD: Hono answers with the GET route's headers and drops the body, which the middleware
  // drains (a streamed one's producer goes on): the next GET still gets the whole answer
  for (const nodeResponse of [true, false]) {
    const path = nodeResponse ? "Node response" : "Fetch path";
    it(`answers a GET after a HEAD with the whole body on @hono/node-server (${path}), each lock released once`, async () => {
      const { app, shared } = sharedApp();
      const server = await bed.serve(app, { nodeResponse });
      shared.locked = new Response("ok", { headers: { "x-shared": "yes" } });
      const releases = countReleases("shared");
      let requests = 0;
      for (const method of ["HEAD", "GET", "HEAD", "HEAD", "GET", "GET"] as const) {
        const answer = await send(`${server.url}/locked`, { method });
        const text = method === "GET" ? "ok" : "";
        expect([method, answer.status, answer.headers["x-shared"], answer.text]).toEqual([method, 200, "yes", text]);
        await expect.poll(() => releases.count).toBe(++requests);
      }
      releases.stop();
    });
  }
});
