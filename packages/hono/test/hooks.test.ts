/**
 * onLocked / onUnavailable hooks that return no Response (they only log, or resolve without
 * answering) get the default 423 or 503 JSON, as on the other adapters; a hook that throws goes to
 * Hono's error handler.
 */
import { Hono } from "hono";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  hookRoutes,
  itSendsTheDefaultForSilentHooks,
  REFUSAL_HOOKS,
  SILENT_HOOKS,
  useRefusingRedlocks,
} from "#test-helpers/refused-routes.js";
import { createRedlockMiddleware, type HonoLockHook } from "../src/index.js";
import { serveHono } from "./serve.js";

const { redlocks, refused } = useRefusingRedlocks();
let server: Awaited<ReturnType<typeof serveHono>> | undefined;
const { post } = hookRoutes(refused, () => server?.url ?? "");

const hooks: Record<string, HonoLockHook> = {
  // a hook typed to return a Response that returns none
  ...(SILENT_HOOKS as unknown as Record<string, HonoLockHook>),
  throws: () => {
    throw new Error("hook failed");
  },
};

beforeAll(async () => {
  const app = new Hono();
  app.onError((error, c) => c.json({ fallback: error.message }, 500));
  const live = createRedlockMiddleware(redlocks.live);
  const down = createRedlockMiddleware(redlocks.down);
  for (const [name, hook] of Object.entries(hooks)) {
    app.post(`/onLocked/${name}`, live(`hooks:${name}`, { onLocked: hook }), (c) => c.json({ ran: true }));
    app.post(`/onUnavailable/${name}`, down(`hooks:${name}`, { onUnavailable: hook }), (c) => c.json({ ran: true }));
  }
  server = await serveHono(app);
});

afterAll(() => server?.close());

itSendsTheDefaultForSilentHooks(post, "the same");

it.each(REFUSAL_HOOKS)("an %s hook that throws goes to Hono's error handler", async (hook) => {
  const answer = await post(hook, "throws");
  expect(answer.status).toBe(500);
  expect(JSON.parse(answer.text)).toEqual({ fallback: "hook failed" });
});
