/**
 * onLocked / onUnavailable hooks that leave the request unanswered (they only log, or resolve
 * without answering) get the default 423 or 503 JSON instead of a request that hangs; a hook that
 * answers, even later or with a stream it has only started, keeps its answer.
 */
import http from "node:http";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import {
  hookRoutes,
  itSendsTheDefaultForSilentHooks,
  listenOnLoopback,
  REFUSAL_HOOKS,
  SILENT_HOOKS,
  useRefusingRedlocks,
} from "#test-helpers/refused-routes.js";
import { createRedlockMiddleware, type ExpressLockHook } from "../src/index.js";

const { redlocks, refused } = useRefusingRedlocks();
let server: Awaited<ReturnType<typeof listenOnLoopback>> | undefined;
const { post, started } = hookRoutes(refused, () => server?.url ?? "");
/** Opened by the test once it has the streaming hook's status: the hook then ends its response. */
let streamEnd = gate();

const hooks: Record<string, ExpressLockHook> = {
  ...SILENT_HOOKS,
  "answers-later": async (_req, res) => {
    await Promise.resolve();
    res.status(429).json({ hook: true });
  },
  streams: (_req, res) => {
    res.status(429).write("busy ");
    void streamEnd.opened.then(() => res.end("over"));
  },
  throws: () => {
    throw new Error("hook failed");
  },
};

beforeAll(async () => {
  const app = express();
  app.set("env", "production");
  const live = createRedlockMiddleware(redlocks.live);
  const down = createRedlockMiddleware(redlocks.down);
  for (const [name, hook] of Object.entries(hooks)) {
    app.post(`/onLocked/${name}`, live(`hooks:${name}`, { onLocked: hook }), (_req, res) => {
      res.json({ ran: true });
    });
    app.post(`/onUnavailable/${name}`, down(`hooks:${name}`, { onUnavailable: hook }), (_req, res) => {
      res.json({ ran: true });
    });
  }
  app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    res.status(500).json({ fallback: error.message });
  });
  server = await listenOnLoopback(http.createServer(app));
});

afterAll(() => server?.close());

itSendsTheDefaultForSilentHooks(post, "no answer at all, a hang");

it.each(REFUSAL_HOOKS)("an %s hook that answers after an await keeps its answer", async (hook) => {
  const answer = await post(hook, "answers-later");
  expect(answer.status).toBe(429);
  expect(JSON.parse(answer.text)).toEqual({ hook: true });
});

it.each(REFUSAL_HOOKS)("an %s hook's streamed answer, started, is not written over", async (hook) => {
  streamEnd = gate();
  expect(await started(hook, "streams", streamEnd.open)).toEqual({ status: 429, body: "busy over" });
});

it.each(REFUSAL_HOOKS)("an %s hook that throws hands its error to next()", async (hook) => {
  const answer = await post(hook, "throws");
  expect(answer.status).toBe(500);
  expect(JSON.parse(answer.text)).toEqual({ fallback: "hook failed" });
});
