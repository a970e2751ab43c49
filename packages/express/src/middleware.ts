import {
  answerRejected,
  createHttpLockPolicy,
  guardLostAnswer,
  type HttpKeySource,
  holdingLock,
  type KeySpec,
  type Lock,
  type NestedRouteOutcome,
  type Redlock,
  type RedlockError,
  type RouteLockOptions,
  responseAnswered,
} from "@redlock-kit/core";
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { installLockSlot } from "./request-lock-slot.js";

declare global {
  namespace Express {
    interface Request {
      /** The lock taken by `redlock(...)` for this request; released when the response has finished. */
      lock?: Lock;
    }
  }
}

/**
 * Writes a custom response instead of the 423 (`onLocked`) or 503 (`onUnavailable`) JSON; the route
 * handler does not run. Answer before returning (`res.render()`, `res.sendFile()` and `res.download()`
 * count, though Express sends them later), or return a promise that settles once answered: a request
 * still unanswered then (headers not sent) gets the default JSON. A throw or rejection goes to
 * `next(error)`, and so does a failed `res.sendFile()`, `res.download()` (a directory too) or
 * `res.render()` without a callback: the route's own error handlers see it, the handler never runs.
 */
export type ExpressLockHook = (req: Request, res: Response, error: RedlockError) => unknown;

/** Per-route options (and defaults): `ttl`, `wait`, `autoExtend`, `maxHoldMs`, hooks… see `RouteLockOptions`. */
export type ExpressRedlockOptions = RouteLockOptions<ExpressLockHook>;

/** Declares the lock of one route; bad keys or options throw here, when the route is defined. */
export type RedlockRouteMiddleware = (key: KeySpec<HttpKeySource>, options?: ExpressRedlockOptions) => RequestHandler;

/**
 * Creates `redlock(key, options?)`, a route middleware factory: each request resolves the key from
 * `{ params, query, body, headers }`, takes the lock (423, 503 or 400 JSON when it cannot), puts it on
 * `req.lock`, and releases it once the response has finished. Works with Express 5 and 4.
 *
 * @example
 * const redlock = createRedlockMiddleware(dlm, { ttl: 1000 });
 * app.post("/orders/:id/pay", redlock("order:{params.id}", { wait: 2000 }), (req, res) => {
 *   res.json({ paid: req.params.id });
 * });
 */
export function createRedlockMiddleware(dlm: Redlock, defaults?: ExpressRedlockOptions): RedlockRouteMiddleware {
  const policy = createHttpLockPolicy<ExpressLockHook>(dlm, defaults);
  installLockSlot();
  return function redlock(key, options) {
    const route = policy.route(key, options);
    const readsQuery = route.readsQuery;
    return function redlockMiddleware(req, res, next) {
      const source: HttpKeySource = {
        params: req.params,
        // Express 5 parses the query string on every read of req.query: only when the key uses it
        query: readsQuery ? req.query : undefined,
        body: req.body,
        headers: req.headers,
      };
      // Express 4 ignores returned promises, so every rejection is handed to next() here. req.lock:
      // a guard of this request (app.use) holding the key already is not waited for
      route
        .begin(source, res, undefined, req.lock)
        .then((outcome) => {
          if (outcome.kind === "reentered") {
            // under the guard's lock, which that guard releases and follows
            req.lock = outcome.lock;
            return next();
          }
          if (outcome.kind !== "acquired") return answer(outcome, req, res, next);
          req.lock = outcome.lock;
          // Express has no point where a middleware sees the handler's answer before it is written:
          // the response's first write decides, and a success after the lock was lost goes out as 409
          guardLostAnswer(res, outcome.held);
          // the rest of the request runs holding the lock: a @Locked method on the same key does not wait for it
          holdingLock(dlm, outcome.lock, next);
        })
        .catch(next);
    };
  };
}

/** A request that gets no lock: the hook's response or the JSON one, or nothing if the client left. */
function answer(
  outcome: Exclude<NestedRouteOutcome<ExpressLockHook>, { kind: "acquired" | "reentered" }>,
  req: Request,
  res: Response,
  next: NextFunction,
) {
  if (outcome.kind === "aborted") {
    // The client left while the route waited, and nothing of this request runs after it: end the
    // response (nothing is sent), as Koa does, so that a lock an earlier route or guard of this
    // request holds sees its end and is released, not left to lapse after its ttl. One another
    // step answered while the route waited is ended already.
    if (!res.writableEnded) res.end();
    return;
  }
  let later: LaterAnswers | undefined;
  return answerRejected(
    outcome,
    async (hook) => {
      later = followLaterAnswers(res, next);
      await hook(req, res, outcome.error);
      await Promise.all(later.callbacks);
    },
    () => later?.answered === true || responseAnswered(res),
    // res.json() keeps a Content-Type set before: core removes it (and the body's other headers) first
    ({ status, headers, body }) => res.status(status).set(headers).json(body),
    (name) => res.removeHeader(name),
  );
}

/**
 * Express's answers that go out later, from a callback (a view engine's, a file's `stat`): nothing is
 * sent when a hook calling one returns, and the default JSON written then made their answer throw
 * (`res.render`'s, uncaught: the process exits) or go to the error handlers.
 */
const LATER_ANSWERS = ["render", "sendFile", "download"] as const;

interface LaterAnswers {
  /** One was called without a callback: Express sends its answer, or hands its error to next(). */
  answered: boolean;
  /** Settle once the callbacks given to them have run: those answer, or leave the default JSON to go out. */
  readonly callbacks: Promise<void>[];
}

/**
 * Follows the calls of `LATER_ANSWERS` on `res` from now on. One without a callback gets ours in place
 * of Express's own, which calls `req.next`, the router's next, past the error handlers inside the
 * route (`app.get(path, redlock(...), handler, errorHandler)`); `sendFile()`'s calls it without the
 * error for a directory (EISDIR), "let the next layer serve it": for a refused request, the handler,
 * run without the lock. Ours hand every error to this middleware's `next`.
 */
function followLaterAnswers(res: Response, next: NextFunction): LaterAnswers {
  const later: LaterAnswers = { answered: false, callbacks: [] };
  const failed = (error?: NodeJS.ErrnoException) => {
    // as Express's: a client gone or a failed write leaves nobody to answer; any other error, EISDIR too, goes to the error handlers
    if (error && error.code !== "ECONNABORTED" && error.syscall !== "write") next(error);
  };
  const rendered = (error: Error | null, html?: string) => {
    // as Express's: the view sent, or its error to the error handlers
    if (error) next(error);
    else res.send(html);
  };
  const methods = res as unknown as Record<(typeof LATER_ANSWERS)[number], (...args: unknown[]) => unknown>;
  for (const name of LATER_ANSWERS) {
    const method = methods[name];
    methods[name] = function answerLater(this: Response, ...args: unknown[]) {
      const last = args.length - 1;
      const callback = args[last];
      if (callback === failed) {
        // download()'s own sendFile() call, followed already
      } else if (typeof callback !== "function") {
        later.answered = true;
        if (args.length > 0) {
          // sendFile(path, undefined), render(view, undefined): the callback goes where Express looks for it
          while (args.length > 1 && args.at(-1) === undefined) args.pop();
          args.push(name === "render" ? rendered : failed);
        }
      } else {
        // render() to a string, a download() whose failure the callback only logs: nothing may be sent
        later.callbacks.push(
          new Promise((resolve) => {
            args[last] = function calledBack(this: unknown, ...results: unknown[]) {
              try {
                return Reflect.apply(callback, this, results);
              } finally {
                resolve();
              }
            };
          }),
        );
      }
      return Reflect.apply(method, this, args);
    };
  }
  return later;
}
