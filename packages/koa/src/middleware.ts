import { finished } from "node:stream";
import {
  answerRejected,
  createHttpLockPolicy,
  type HeldRoute,
  type HttpKeySource,
  isWebBody,
  type KeySpec,
  type Lock,
  REPLACED_ANSWER_HEADERS,
  type Redlock,
  type RedlockError,
  type RouteLockOptions,
  responseAnswered,
  sendsNoBody,
} from "@redlock-kit/core";
import type { Middleware, ParameterizedContext } from "koa";
import { withWildcardLists } from "./wildcard-params.js";

declare module "koa" {
  interface DefaultState {
    /** The lock taken by `redlock(...)` for this request; released when the response has finished. */
    lock?: Lock;
  }
}

/**
 * Writes a custom response (sets `ctx.status` and `ctx.body`) instead of the 423 (`onLocked`) or
 * 503 (`onUnavailable`) JSON; the rest of the middleware chain does not run. A hook that has changed
 * neither once it returned (or its promise settled) gets the default JSON, not Koa's 404 nor what an
 * earlier middleware had set. A throw or rejection goes to Koa's error handling.
 */
export type KoaLockHook = (ctx: ParameterizedContext, error: RedlockError) => unknown;

/** Per-route options (and defaults): `ttl`, `wait`, `autoExtend`, `maxHoldMs`, hooks… see `RouteLockOptions`. */
export type KoaRedlockOptions = RouteLockOptions<KoaLockHook>;

/** Declares the lock of one route; bad keys or options throw here, when the route is defined. */
export type RedlockRouteMiddleware = (key: KeySpec<HttpKeySource>, options?: KoaRedlockOptions) => Middleware;

/** What routers and body parsers add to the context; Koa itself has neither. */
interface RoutedContext {
  params?: unknown;
  /** The matched route's path (`/files/*path`), set by @koa/router. */
  routerPath?: unknown;
  request: { body?: unknown };
}

/**
 * Creates `redlock(key, options?)`, a middleware factory for Koa and `@koa/router`: each request
 * resolves the key from `{ params, query, body, headers }` (`body` as set by a body parser), takes
 * the lock (423, 503 or 400 JSON when it cannot), puts it on `ctx.state.lock`, and releases it once
 * the response has finished (after Koa has written the body, streams included) and the rest of the
 * chain (`await next()`) has settled.
 *
 * @example
 * const redlock = createRedlockMiddleware(dlm, { ttl: 1000 });
 * router.post("/orders/:id/pay", redlock("order:{params.id}", { wait: 2000 }), (ctx) => {
 *   ctx.body = { paid: ctx.params.id };
 * });
 */
export function createRedlockMiddleware(dlm: Redlock, defaults?: KoaRedlockOptions): RedlockRouteMiddleware {
  const policy = createHttpLockPolicy<KoaLockHook>(dlm, defaults);
  return function redlock(key, options) {
    const route = policy.route(key, options);
    const readsQuery = route.readsQuery;
    return async function redlockMiddleware(ctx, next) {
      const routed = ctx as ParameterizedContext & RoutedContext;
      const source: HttpKeySource = {
        params: withWildcardLists(routed.params, routed.routerPath),
        // ctx.query parses the query string on first read: only when the key uses it
        query: readsQuery ? ctx.query : undefined,
        body: routed.request.body,
        headers: ctx.headers,
      };
      // No release after next(): Koa writes the body after the chain resolves; begin() watches the response.
      // A web body (Koa 3: a ReadableStream, a Response with one) set once its client had left is
      // not read: Koa ends the response at once while the body's producer may still run, and that
      // end is not the handler's (the lock expires within one ttl).
      // ctx.state.lock: a router-level guard of this request holding the key already is not waited for
      const enclosing = ctx.state.lock;
      const outcome = await route.begin(source, ctx.res, () => !isWebBody(ctx.body), enclosing);
      if (outcome.kind === "reentered") {
        // under the guard's lock, which that guard releases once the chain and the response are done
        ctx.state.lock = outcome.lock;
        try {
          return await next();
        } finally {
          ctx.state.lock = enclosing;
        }
      }
      if (outcome.kind === "acquired") {
        ctx.state.lock = outcome.lock;
        try {
          // The rest of the chain runs holding the lock (a @Locked method on the same key does not wait
          // for it), and the lock waits for it to settle: a timeout middleware that answered for it
          // ends the response while the handler still runs.
          try {
            await outcome.held.run(next);
          } finally {
            // nested in a guard of this request: the guard's chain sees its own lock again after next()
            if (enclosing !== undefined) ctx.state.lock = enclosing;
          }
          // Koa responds once the chain has settled: a success whose lock was lost meanwhile goes
          // out as 409, not as if the critical section had run alone
          if (!ctx.headerSent && ctx.respond !== false) replaceLostAnswer(ctx, outcome.held);
          // HEAD, 204, 304: Koa ends the response without reading a streamed body, and destroys the
          // stream while its producer goes on as for a 200: drained here, the lock waits for its
          // end, and so does the response (as a 200's does). A client that leaves meanwhile: core
          // stops the body and takes no end written after that for the handler's (the lock lapses)
          if (sendsNoBody(ctx.method, ctx.status)) await outcome.held.followDropped(ctx.body);
          else if (isStream(ctx.body)) followStream(ctx);
          return;
        } catch (error) {
          // the lock is released once the response ends, or lapses within one ttl once it is closed
          closeAfterThrow(ctx);
          throw error;
        }
      }
      if (outcome.kind === "aborted") return;
      // what earlier middleware set before await next() (a default body, ctx.status = 200) is not
      // the hook's answer: only what the hook changes is (without one, Koa's 404 and no body)
      const { status: statusBefore, body: bodyBefore } = ctx;
      try {
        await answerRejected(
          outcome,
          (hook) => hook(ctx, outcome.error),
          () =>
            ctx.body !== bodyBefore ||
            ctx.status !== statusBefore ||
            ctx.respond === false ||
            responseAnswered(ctx.res),
          // Koa keeps a Content-Type set before a JSON body: core removes it (and the body's other headers) first
          ({ status, headers, body }) => {
            ctx.status = status;
            ctx.set(headers);
            ctx.body = body;
          },
          (name) => ctx.remove(name),
        );
      } catch (error) {
        // a hook that threw once its own answer had started
        closeAfterThrow(ctx);
        throw error;
      }
    };
  };
}

/**
 * What Koa's onerror does not do: it writes nothing, not even res.end(), once the client has left
 * or the headers were sent. Left: the response is ended, so that a lock that follows it sees it
 * finished and is released now rather than at maxHoldMs. Headers sent: the connection is closed,
 * as Express does (the client must not wait for ever, nor take a cut-off body for a whole one).
 */
function closeAfterThrow(ctx: ParameterizedContext): void {
  if (!ctx.writable) ctx.res.end();
  else if (ctx.headerSent) ctx.res.destroy();
}

/** The answer `held.lostAnswer()` puts in place of the handler's: a stream body is destroyed, its producer told. */
function replaceLostAnswer(ctx: ParameterizedContext, held: HeldRoute): void {
  const answer = held.lostAnswer(ctx.status);
  if (answer === undefined) return;
  const replaced: unknown = ctx.body;
  // Koa 3 destroys a replaced Node stream itself, Koa 2 does not; a web body (Koa 3) is cancelled
  if (isStream(replaced)) (replaced as NodeJS.ReadableStream & { destroy(): void }).destroy();
  const web = replaced instanceof Response ? replaced.body : replaced;
  if (web instanceof ReadableStream) web.cancel().catch(() => {});
  for (const name of REPLACED_ANSWER_HEADERS) ctx.remove(name);
  ctx.body = answer.body;
  ctx.status = answer.status;
  ctx.set(answer.headers);
}

/** The client left before the response was ended. */
function leftUnanswered(res: ParameterizedContext["res"]): boolean {
  return res.destroyed && !res.writableEnded;
}

function isStream(body: unknown): body is NodeJS.ReadableStream {
  return typeof (body as { pipe?: unknown } | null | undefined)?.pipe === "function";
}

/**
 * A stream body, as Koa is about to send it.
 *
 * Its client already left: Koa 3 does not send it but ends the response at once (and destroys the
 * stream) while the stream's producer may still run, as after a reader that leaves mid-stream. That
 * end is not the handler's: Koa is told not to respond, and the lock, no longer extended since the
 * client left, lapses within one ttl (Koa 2 ended nothing there either).
 *
 * Koa 2 pipes it into the response and, once the headers are out, leaves the response open when
 * that stream fails (Koa 3 destroys it): its client would wait for ever, and the lock be extended
 * until `maxHoldMs`. The response is closed as Koa 3 does; the lock then lapses within one ttl, as
 * for any failure after the headers. So is one whose body wraps the stream (`stream.pipe(gzip)`
 * forwards no error, and the wrapper never ends).
 *
 * Not a stream dropped unsent: replaced by an earlier middleware after `await next()` (Koa 3
 * destroys it when the new body is not a stream; a middleware on Koa 2 does), or destroyed by Koa
 * once the response finished. The body sent instead goes on: a response already ended is whole, and
 * a stream destroyed without an error while it is no longer the body is not what the client reads.
 */
function followStream(ctx: ParameterizedContext): void {
  const res = ctx.res;
  if (leftUnanswered(res)) {
    ctx.respond = false;
    return;
  }
  const stream = ctx.body as NodeJS.ReadableStream;
  finished(stream, { writable: false }, (error) => {
    if (!error || res.destroyed || res.writableEnded) return;
    const dropped = (error as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE" && ctx.body !== stream;
    if (!dropped) res.destroy();
  });
}
