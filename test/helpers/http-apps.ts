/**
 * The same routes on Express, Koa (+ @koa/router, @koa/bodyparser), Fastify and Hono (on
 * @hono/node-server), each on a real loopback port: the glue the HTTP contract suite runs against. A route is described once,
 * framework-neutral; each builder maps it to its framework, the adapter's options and hooks.
 */
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { createAdaptorServer, type HttpBindings } from "@hono/node-server";
import { bodyParser } from "@koa/bodyparser";
import { Router } from "@koa/router";
import type { HttpKeySource, KeySpec, Lock, Redlock, RedlockError, RouteLockOptions } from "@redlock-kit/core";
import {
  type ExpressLockHook,
  createRedlockMiddleware as expressRedlock,
  redlockErrorHandler,
} from "@redlock-kit/express";
import redlockPlugin, { type FastifyLockHook } from "@redlock-kit/fastify";
import { type HonoLockHook, createRedlockMiddleware as honoRedlock, type RedlockEnv } from "@redlock-kit/hono";
import { type KoaLockHook, createRedlockMiddleware as koaRedlock } from "@redlock-kit/koa";
import express from "express";
import Fastify from "fastify";
import { type Context, Hono, type MiddlewareHandler } from "hono";
import Koa from "koa";

/** What a handler answers: JSON (status 200 unless given, with `headers` if any) or a streamed body. */
export type Reply = { status?: number; json: unknown; headers?: Record<string, string> } | { stream: Readable };

const answerHeaders = (reply: { headers?: Record<string, string> }) => reply.headers ?? {};

/**
 * A lock middleware mounted at the router level on a path prefix (Express `app.use`, Koa
 * `router.use`, Hono `app.use(prefix/*)`), before the route: the route runs inside it. Fastify has
 * no such place (its locks are `config.redlock`, one per route).
 */
export interface GuardSpec {
  /** Express-style prefix with parameters: `/orders/:id`. */
  path: string;
  key: KeySpec<HttpKeySource>;
  options?: RouteDefaults;
  /** The guard's own Redlock (the app's when not given). */
  redlock?: Redlock;
  /** Runs after the guard took its lock, before the route, with the lock the guard put on the request. */
  entered?: (lock: Lock | undefined) => Promise<void>;
  /** Koa and Hono: runs once the route after the guard settled (after `await next()`), with the request's lock then. */
  left?: (lock: Lock | undefined) => void;
}

export interface RouteSpec {
  method: "get" | "post";
  /** Express-style path; all three routers read `/orders/:id/pay` the same way. */
  path: string;
  key: KeySpec<HttpKeySource>;
  /**
   * Route options without hooks; `hooks: true` installs the custom onLocked/onUnavailable below,
   * `hooks: "silent"` ones that only set `SILENT_HOOK_HEADERS` and answer nothing.
   */
  options?: RouteDefaults & { hooks?: boolean | "silent" };
  /** Lock middleware at the router level that the route is nested in, outermost first. */
  guards?: readonly GuardSpec[];
  /** Response headers a middleware (Fastify: an onRequest hook) of the route sets before the lock's. */
  headersBefore?: Record<string, string>;
  /**
   * Gets the lock the adapter attached (req.lock, ctx.state.lock, request.lock, c.var.lock), and the
   * Node request and response under the framework's (to read the url, or see the client leave);
   * `hono-fetch` hides them (undefined there).
   */
  handler: (lock: Lock | undefined, node: NodeExchange) => Promise<Reply>;
}

export interface NodeExchange {
  req: http.IncomingMessage;
  res: http.ServerResponse;
}

/** What the custom hooks answer, so that a test can tell them from the built-in JSON. */
export const HOOK_STATUS = { onLocked: 429, onUnavailable: 502 } as const;
const hookBody = (hook: keyof typeof HOOK_STATUS, error: RedlockError) => ({ hook, code: error.code });
/** A header describing the body that the custom hooks set on their own answer. */
export const HOOK_HEADERS = { "Content-Language": "en" } as const;
/** What the silent hooks set before they let the default JSON go out: one of each kind. */
export const SILENT_HOOK_HEADERS = { "Content-Language": "en", "X-Hook": "ran" } as const;

export interface RunningApp {
  readonly url: string;
  readonly server: http.Server;
  close(): Promise<void>;
}

/**
 * `hono-fetch`: the Hono app served with the Node request and response hidden from it (no
 * `c.env.outgoing`), as on Bun, Deno or a worker: the middleware follows the `Response` it returns.
 */
export type Framework = "express" | "koa" | "fastify" | "hono" | "hono-fetch";
/** The adapter's defaults (`createRedlockMiddleware(dlm, defaults)`, the Fastify plugin's options), without hooks. */
export type RouteDefaults = Omit<RouteLockOptions, "onLocked" | "onUnavailable">;
export type AppBuilder = (dlm: Redlock, routes: readonly RouteSpec[], defaults?: RouteDefaults) => Promise<RunningApp>;

async function listen(server: http.Server): Promise<RunningApp> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeIdleConnections();
      }),
  };
}

function withHooks<Hook>(spec: RouteSpec, onLocked: Hook, onUnavailable: Hook, silent: Hook): RouteLockOptions<Hook> {
  const { hooks, ...options } = spec.options ?? {};
  if (hooks === "silent") return { ...options, onLocked: silent, onUnavailable: silent };
  return hooks ? { ...options, onLocked, onUnavailable } : options;
}

const buildExpress: AppBuilder = async (dlm, routes, defaults) => {
  const app = express();
  // what a deployed app runs with: the default error page then carries no error text
  app.set("env", "production");
  app.use(express.json());
  const redlock = expressRedlock(dlm, defaults);
  for (const spec of routes) {
    const options = withHooks<ExpressLockHook>(
      spec,
      (_req, res, error) => res.status(HOOK_STATUS.onLocked).set(HOOK_HEADERS).json(hookBody("onLocked", error)),
      (_req, res, error) =>
        res.status(HOOK_STATUS.onUnavailable).set(HOOK_HEADERS).json(hookBody("onUnavailable", error)),
      (_req, res) => {
        res.set(SILENT_HOOK_HEADERS);
      },
    );
    const before: express.RequestHandler = (_req, res, next) => {
      res.set(spec.headersBefore ?? {});
      next();
    };
    for (const guard of spec.guards ?? []) {
      const entered: express.RequestHandler = (req, _res, next) => {
        (guard.entered?.(req.lock) ?? Promise.resolve()).then(() => next(), next);
      };
      app.use(guard.path, expressRedlock(guard.redlock ?? dlm, defaults)(guard.key, guard.options), entered);
    }
    app[spec.method](spec.path, before, redlock(spec.key, options), async (req, res) => {
      const reply = await spec.handler(req.lock, { req, res });
      if ("stream" in reply) reply.stream.pipe(res);
      else
        res
          .status(reply.status ?? 200)
          .set(answerHeaders(reply))
          .json(reply.json);
    });
  }
  app.use(redlockErrorHandler());
  return listen(http.createServer(app));
};

const buildKoa: AppBuilder = async (dlm, routes, defaults) => {
  const app = new Koa();
  // Koa logs every 5xx to stderr unless silent; its default error body is the status text
  app.silent = true;
  const router = new Router();
  const redlock = koaRedlock(dlm, defaults);
  for (const spec of routes) {
    const options = withHooks<KoaLockHook>(
      spec,
      (ctx, error) => {
        ctx.status = HOOK_STATUS.onLocked;
        ctx.set(HOOK_HEADERS);
        ctx.body = hookBody("onLocked", error);
      },
      (ctx, error) => {
        ctx.status = HOOK_STATUS.onUnavailable;
        ctx.set(HOOK_HEADERS);
        ctx.body = hookBody("onUnavailable", error);
      },
      (ctx) => {
        ctx.set(SILENT_HOOK_HEADERS);
      },
    );
    const before: Koa.Middleware = (ctx, next) => {
      ctx.set(spec.headersBefore ?? {});
      return next();
    };
    for (const guard of spec.guards ?? []) {
      router.use(
        guard.path,
        koaRedlock(guard.redlock ?? dlm, defaults)(guard.key, guard.options),
        async (ctx, next) => {
          await guard.entered?.(ctx.state.lock);
          await next();
          guard.left?.(ctx.state.lock);
        },
      );
    }
    router[spec.method](spec.path, before, redlock(spec.key, options), async (ctx) => {
      const reply = await spec.handler(ctx.state.lock, { req: ctx.req, res: ctx.res });
      if ("stream" in reply) ctx.body = reply.stream;
      else {
        ctx.status = reply.status ?? 200;
        ctx.set(answerHeaders(reply));
        ctx.body = reply.json;
      }
    });
  }
  app.use(bodyParser());
  app.use(router.routes());
  return listen(http.createServer(app.callback()));
};

const buildFastify: AppBuilder = async (dlm, routes, defaults) => {
  // Fastify answers 404 itself for a path parameter over 100 characters; raised so that long
  // parameters reach the lock's key, as they do on Express and Koa
  const app = Fastify({ routerOptions: { maxParamLength: 4096 } });
  await app.register(redlockPlugin, { redlock: dlm, ...defaults });
  // Fastify's default error handler sends error.message even for a 500; a deployed app hides it
  app.setErrorHandler((error, _request, reply) => {
    const status = (error as { statusCode?: number }).statusCode ?? 500;
    if (status >= 500) return reply.code(500).send({ error: "Internal Server Error" });
    return reply.send(error);
  });
  for (const spec of routes) {
    if (spec.guards) throw new Error(`${spec.path}: Fastify has no router-level lock (config.redlock is per route)`);
    const options = withHooks<FastifyLockHook>(
      spec,
      (_request, reply, error) =>
        reply.code(HOOK_STATUS.onLocked).headers(HOOK_HEADERS).send(hookBody("onLocked", error)),
      (_request, reply, error) =>
        reply.code(HOOK_STATUS.onUnavailable).headers(HOOK_HEADERS).send(hookBody("onUnavailable", error)),
      (_request, reply) => {
        reply.headers(SILENT_HOOK_HEADERS);
      },
    );
    app.route({
      method: spec.method.toUpperCase() as "GET" | "POST",
      url: spec.path,
      config: { redlock: { key: spec.key, ...options } },
      onRequest: (_request, reply, done) => {
        reply.headers(spec.headersBefore ?? {});
        done();
      },
      handler: async (request, reply) => {
        const answer = await spec.handler(request.lock ?? undefined, { req: request.raw, res: reply.raw });
        if ("stream" in answer) return reply.send(answer.stream);
        return reply
          .code(answer.status ?? 200)
          .headers(answerHeaders(answer))
          .send(answer.json);
      },
    });
  }
  await app.listen({ port: 0, host: "127.0.0.1" });
  const { port } = app.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, server: app.server, close: () => app.close() };
};

async function buildHono(
  dlm: Redlock,
  routes: readonly RouteSpec[],
  defaults: RouteDefaults | undefined,
  nodeResponse: boolean,
): Promise<RunningApp> {
  const app = new Hono<{ Bindings: Partial<HttpBindings> }>();
  // Hono's default error handler logs the error; a deployed app answers a plain 500
  app.onError((_error, c) => c.json({ error: "Internal Server Error" }, 500));
  const redlock = honoRedlock(dlm, defaults);
  for (const spec of routes) {
    const options = withHooks<HonoLockHook>(
      spec,
      (c, error) => c.json(hookBody("onLocked", error), HOOK_STATUS.onLocked, HOOK_HEADERS),
      (c, error) => c.json(hookBody("onUnavailable", error), HOOK_STATUS.onUnavailable, HOOK_HEADERS),
      // answers nothing: anything but a Response sends the default JSON
      ((c: Context) => {
        for (const [name, value] of Object.entries(SILENT_HOOK_HEADERS)) c.header(name, value);
      }) as unknown as HonoLockHook,
    );
    // on c.res, as cors() sets its headers: Hono's setter merges them over a response set after
    const before: MiddlewareHandler = async (c, next) => {
      for (const [name, value] of Object.entries(spec.headersBefore ?? {})) c.res.headers.set(name, value);
      await next();
    };
    for (const guard of spec.guards ?? []) {
      const entered: MiddlewareHandler<RedlockEnv> = async (c, next) => {
        await guard.entered?.(c.get("lock"));
        await next();
        guard.left?.(c.get("lock"));
      };
      app.use(`${guard.path}/*`, honoRedlock(guard.redlock ?? dlm, defaults)(guard.key, guard.options), entered);
    }
    app[spec.method](spec.path, before, redlock(spec.key, options), async (c) => {
      const reply = await spec.handler(c.var.lock, { req: c.env?.incoming, res: c.env?.outgoing } as NodeExchange);
      if ("stream" in reply) return new Response(Readable.toWeb(reply.stream) as ReadableStream<Uint8Array>);
      return c.json(reply.json as object, (reply.status ?? 200) as 200, answerHeaders(reply));
    });
  }
  // a fetch that passes the request alone: Hono's `c.env` then holds no Node objects
  const fetch = nodeResponse ? app.fetch : (request: Request) => app.fetch(request);
  return listen(createAdaptorServer({ fetch }) as http.Server);
}

export const buildApp: Record<Framework, AppBuilder> = {
  express: buildExpress,
  koa: buildKoa,
  fastify: buildFastify,
  hono: (dlm, routes, defaults) => buildHono(dlm, routes, defaults, true),
  "hono-fetch": (dlm, routes, defaults) => buildHono(dlm, routes, defaults, false),
};
