/**
 * Hono's `compress()` around a locked route whose body has no explicit Content-Type (`stream()`,
 * `new Response(stream)`). On @hono/node-server's Fetch path (HTTP/2, or `app.fetch` called without
 * the Node response) the server's own `Response` class gives such a body its default
 * `text/plain; charset=UTF-8`, but only while its headers are read before its body: read body
 * first, the Response it builds has none. `compress()` then saw no Content-Type and sent the body
 * uncompressed, as plain Hono would not.
 */
import { gunzipSync } from "node:zlib";
import { Hono } from "hono";
import { compress } from "hono/compress";
import { stream } from "hono/streaming";
import { describe, expect, it } from "vitest";
import { open } from "#test-helpers/http-client.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

for (const nodeResponse of [true, false]) {
  const path = nodeResponse ? "Node response" : "Fetch path";
  describe(`compress() around a locked route (${path})`, () => {
    it("compresses a stream() body without a Content-Type as without the lock, and releases once it is sent", async () => {
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 1000 });
      const app = new Hono();
      app.use(compress());
      app.get("/export/:id", redlock("export:{params.id}"), (c) =>
        stream(c, async (out) => {
          await out.write("a".repeat(2000));
          await out.write("b".repeat(2000));
        }),
      );
      const server = await bed.serve(app, { nodeResponse });
      const released = nextRelease("export:1");
      const { response } = open(`${server.url}/export/1`, { headers: { "accept-encoding": "gzip" } });
      const answer = await response;
      const chunks: Buffer[] = [];
      for await (const chunk of answer) chunks.push(chunk as Buffer);
      expect([answer.headers["content-encoding"], answer.headers["content-type"]]).toEqual([
        "gzip",
        "text/plain; charset=UTF-8",
      ]);
      expect(gunzipSync(Buffer.concat(chunks)).toString()).toBe(`${"a".repeat(2000)}${"b".repeat(2000)}`);
      expect((await arrival(released, "the lock's release")).released).toBe(true);
    });
  });
}
