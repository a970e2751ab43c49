/**
 * Fastify gives a wildcard route's rest of the path as `request.params["*"]`: `/files/*` on
 * `/files/a/b/c` sets it to `"a/b/c"`. A route keyed `"file:{params.*}"` locks `file:a/b/c`.
 */

import Fastify from "fastify";
import { expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { useWildcardApp } from "#test-helpers/wildcard-route.js";
import redlockPlugin from "../src/index.js";

const served = useWildcardApp("params.*", async (dlm, handle) => {
  const app = Fastify();
  await app.register(redlockPlugin, { redlock: dlm, ttl: 10_000 });
  // before the fix: a TypeError here, "{params.*}" being a malformed placeholder
  app.get<{ Params: { "*": string } }>("/files/*", { config: { redlock: "file:{params.*}" } }, async (request) => {
    const path = request.params["*"];
    await handle(path);
    return { path, resources: request.lock?.resources };
  });
  await app.listen({ port: 0, host: "127.0.0.1" });
  return { url: `http://127.0.0.1:${(app.server.address() as { port: number }).port}`, close: () => app.close() };
});

it("answers 400 to /files/, whose wildcard is empty, as to any missing part", async () => {
  const answer = await send(`${served.url}/files/`);
  expect(answer.status).toBe(400);
  expect(JSON.parse(answer.text)).toEqual({ error: 'Lock key part "params.*" is missing' });
  expect(await served.redis.keys("file:*")).toEqual([]);
});
