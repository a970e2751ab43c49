/**
 * onLocked / onUnavailable hooks that set no answer (they only log, or resolve without answering)
 * get the default 423 or 503 JSON instead of Koa's 404; a hook that answers, even later, with a
 * status alone or with a response it took over and has only started, keeps its answer.
 */
import { once } from "node:events";
import http from "node:http";
import Koa from "koa";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { open } from "#test-helpers/http-client.js";
import {
  expectDefaultAnswer,
  hookRoutes,
  itSendsTheDefaultForSilentHooks,
  listenOnLoopback,
  REFUSAL_HOOKS,
  SILENT_HOOKS,
  useRefusingRedlocks,
} from "#test-helpers/refused-routes.js";
import { createRedlockMiddleware, type KoaLockHook } from "../src/index.js";

const { redlocks, refused } = useRefusingRedlocks();
let server: Awaited<ReturnType<typeof listenOnLoopback>> | undefined;
const { post, started } = hookRoutes(refused, () => server?.url ?? "");
/** Opened by the test once it has the streaming hook's status: the hook then ends its response. */
let streamEnd = gate();

const hooks: Record<string, KoaLockHook> = {
  ...SILENT_HOOKS,
  "answers-later": async (ctx) => {
    await Promise.resolve();
    ctx.status = 429;
    ctx.body = { hook: true };
  },
  "status-only": (ctx) => {
    ctx.status = 429;
  },
  // a bare 404 is Koa's own "nothing answered"; with a body it is the hook's (packages/koa/README.md)
  "not-found": (ctx) => {
    ctx.status = 404;
    ctx.body = "Not Found";
  },
  streams: (ctx) => {
    ctx.respond = false;
    ctx.res.writeHead(429).write("busy ");
    void streamEnd.opened.then(() => ctx.res.end("over"));
  },
  // behind an earlier middleware that set a status or a body of its own before await next()
  "early-status-silent": SILENT_HOOKS.silent,
  "early-body-silent": SILENT_HOOKS["resolves-silent"],
  "early-status-answers": (ctx) => {
    ctx.body = { hook: true };
  },
  "early-body-answers": (ctx) => {
    ctx.status = 429;
  },
  throws: () => {
    throw new Error("hook failed");
  },
  "starts-then-throws": (ctx) => {
    ctx.respond = false;
    ctx.res.writeHead(429).write("busy ");
    throw new Error("hook failed");
  },
};

/** Whether the response was still open when Koa's error handling had a hook's error, by path. */
const leftOpen = new Map<string, boolean>();

beforeAll(async () => {
  const app = new Koa();
  app.silent = true;
  const live = createRedlockMiddleware(redlocks.live);
  const down = createRedlockMiddleware(redlocks.down);
  // no router: the path picks the middleware
  const routes = new Map<string, Koa.Middleware>();
  for (const [name, hook] of Object.entries(hooks)) {
    routes.set(`/onLocked/${name}`, live(`hooks:${name}`, { onLocked: hook }));
    routes.set(`/onUnavailable/${name}`, down(`hooks:${name}`, { onUnavailable: hook }));
  }
  app.on("error", (_error, ctx: Koa.Context) => leftOpen.set(ctx.path, !ctx.res.destroyed));
  // what the answer would be had nothing later answered (a default set up front)
  app.use((ctx, next) => {
    if (ctx.path.includes("/early-status")) ctx.status = 200;
    if (ctx.path.includes("/early-body")) ctx.body = { early: true };
    return next();
  });
  app.use((ctx, next) => {
    const route = routes.get(ctx.path);
    return route ? route(ctx, next) : next();
  });
  app.use((ctx) => {
    ctx.body = { ran: true };
  });
  server = await listenOnLoopback(http.createServer(app.callback()));
});

afterAll(() => server?.close());

itSendsTheDefaultForSilentHooks(post, "Koa's 404");

it.each(
  REFUSAL_HOOKS.flatMap((hook) => [[hook, "early-status-silent"] as const, [hook, "early-body-silent"] as const]),
)(
  "an %s hook that answers nothing (%s) gets the default JSON, not what an earlier middleware set",
  async (hook, name) => {
    expectDefaultAnswer(hook, await post(hook, name));
  },
);

it.each(
  REFUSAL_HOOKS.flatMap((hook) => [
    [hook, "early-status-answers", 200, '{"hook":true}'] as const,
    [hook, "early-body-answers", 429, '{"early":true}'] as const,
    [hook, "answers-later", 429, '{"hook":true}'] as const,
    [hook, "status-only", 429, "Too Many Requests"] as const,
    [hook, "not-found", 404, "Not Found"] as const,
  ]),
)("an %s hook that answers (%s) keeps its answer", async (hook, name, status, body) => {
  const answer = await post(hook, name);
  expect(answer.status).toBe(status);
  expect(answer.text).toBe(body);
});

it.each(REFUSAL_HOOKS)("an %s hook's response, taken over and started, is not written over", async (hook) => {
  streamEnd = gate();
  expect(await started(hook, "streams", streamEnd.open)).toEqual({ status: 429, body: "busy over" });
});

it.each(REFUSAL_HOOKS)("an %s hook that throws goes to Koa's error handling (500)", async (hook) => {
  const answer = await post(hook, "throws");
  expect(answer.status).toBe(500);
  expect(answer.text).toBe("Internal Server Error");
});

it.each(REFUSAL_HOOKS)(
  "an %s hook that throws once its answer has started gets its connection closed, not left open",
  async (hook) => {
    const path = `/${hook}/starts-then-throws`;
    await refused(hook, "hooks:starts-then-throws", async () => {
      // the status line may or may not reach the client before the connection closes
      const over = open(`${server?.url}${path}`, { method: "POST" }).response.then(
        async (response) => {
          response.on("error", () => {});
          await once(response, "close");
          return response.complete ? "ended" : "cut off";
        },
        () => "cut off",
      );
      // Koa's error handling writes nothing once the headers are out: the client would wait for ever
      await expect.poll(() => leftOpen.has(path)).toBe(true);
      expect(leftOpen.get(path)).toBe(false);
      expect(await over).toBe("cut off");
    });
  },
);
