import type { ServerResponse } from "node:http";
import {
  answerRejected,
  createHttpLockPolicy,
  FetchResponseTracker,
  guardLostAnswer,
  type HeldRoute,
  type HttpKeySource,
  type KeySpec,
  type Lock,
  REPLACED_ANSWER_HEADERS,
  type Redlock,
  type RedlockError,
  type RouteLockOptions,
  servedAgain,
} from "@redlock-kit/core";
import type { Context, MiddlewareHandler } from "hono";
import { createMiddleware } from "hono/factory";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { withPathLists } from "./path-params.js";

/**
 * The variables `redlock(...)` sets: `c.var.lock` (and `c.get("lock")`) in the route's handler.
 * Hono infers it for handlers declared after the middleware; `new Hono<RedlockEnv>()` types it
 * everywhere.
 */
export type RedlockEnv = {
  Variables: {
    /** The lock taken for this request; released when the response body has been sent. */
    lock: Lock;
  };
};

/**
 * Answers instead of the 423 (`onLocked`) or 503 (`onUnavailable`) JSON; the route handler does not
 * run. Return the `Response` to send (e.g. `c.json(..., 429)`); anything else sends the default JSON.
 */
export type HonoLockHook = (c: Context, error: RedlockError) => Response | Promise<Response>;

/** Per-route options (and defaults): `ttl`, `wait`, `autoExtend`, `maxHoldMs`, hooks… see `RouteLockOptions`. */
export type HonoRedlockOptions = RouteLockOptions<HonoLockHook>;

/** Declares the lock of one route; bad keys or options throw here, when the route is defined. */
export type RedlockRouteMiddleware = (
  key: KeySpec<HttpKeySource>,
  options?: HonoRedlockOptions,
) => MiddlewareHandler<RedlockEnv>;

/**
 * Creates `redlock(key, options?)`, a route middleware factory for Hono: each request resolves the
 * key from `{ params, query, body, headers }` (`body`: the JSON body, parsed only when the key reads
 * it), takes the lock (423, 503 or 400 JSON when it cannot), puts it on `c.var.lock`, and releases
 * it once the response body has been sent, a streamed one included, and the handler has settled.
 *
 * @example
 * const redlock = createRedlockMiddleware(dlm, { ttl: 1000 });
 * app.post("/orders/:id/pay", redlock("order:{params.id}", { wait: 2000 }), (c) => {
 *   return c.json({ paid: c.req.param("id"), until: c.var.lock.expiresAt });
 * });
 */
export function createRedlockMiddleware(dlm: Redlock, defaults?: HonoRedlockOptions): RedlockRouteMiddleware {
  const policy = createHttpLockPolicy<HonoLockHook>(dlm, defaults);
  return function redlock(key, options) {
    const route = policy.route(key, options);
    const readsBody = route.readsBody;
    // a template reads a path parameter as its segments (core's rule for paths); a key function
    // gets `c.req.param()` as the handler does, strings
    const pathLists = typeof key === "string";
    return createMiddleware<RedlockEnv>(async function redlockMiddleware(c, next) {
      const outgoing = nodeResponse(c);
      // before the first await: a client that leaves while the body is read is still seen
      const tracker = outgoing === undefined ? new FetchResponseTracker(c.req.raw.signal, answeredLater(c)) : undefined;
      const body = readsBody ? await jsonBody(c) : undefined;
      const source = keySource(c, route, body, pathLists);
      // Set once the route's handler has returned its Response. A client that leaves after that,
      // once the server has written the head, left a streamed body (a plain one is written with its
      // head), which the server cancels and then ends while the body's producer (a `stream()`
      // callback) may still run: that end does not release, the lock expires within one ttl. One
      // that leaves before the head (a middleware around the route still at work) did not: the
      // server ends such a response only for a body that is whole, whose producer is done.
      let returned = false;
      // asked when the client leaves and again at the server's end: the first answer holds
      let endsLater: boolean | undefined;
      // c.get, not c.var (an object per read): an app.use() guard of this request holding the key
      // already is not waited for
      const requestLock = c.get("lock") as Lock | undefined;
      // the Node response's own state tells whether its client left while the body was read
      const outcome = await (tracker
        ? route.beginTracked(source, tracker, requestLock)
        : route.begin(
            source,
            outgoing as ServerResponse,
            () => (endsLater ??= !returned || !(outgoing as ServerResponse).headersSent),
            requestLock,
          ));
      // the client left while waiting: nobody reads this
      if (outcome.kind === "aborted") return new Response(null, { status: 499 });
      if (outcome.kind === "reentered") {
        // under the guard's lock, which that guard follows and releases
        c.set("lock", outcome.lock);
        try {
          return await next();
        } finally {
          c.set("lock", requestLock as Lock);
        }
      }
      if (outcome.kind === "rejected") {
        let answer: Response | undefined;
        await answerRejected(
          outcome,
          async (hook) => {
            const custom = await hook(c, outcome.error);
            if (custom instanceof Response) answer = custom;
          },
          () => answer !== undefined,
          // the headers set before (cors()) are in it, under the answer's own (Cache-Control: no-store)
          ({ status, headers, body }) => {
            const json = { ...headers, "content-type": JSON_TYPE };
            answer = setResponse(c, c.json(body, status as ContentfulStatusCode, json));
          },
          (name) => c.header(name, undefined),
        );
        return answer;
      }
      const lock = outcome.lock;
      c.set("lock", lock);
      // on @hono/node-server the lock follows the Node response: released when it has been sent,
      // however Hono built it (a thrown value included: the server answers 500). The rest of the
      // request holds the lock (holdingLock): a @Locked method on the same resource runs under it.
      // The lock also waits for the handler to settle (held.run): a timeout() that answered for it
      // sends the response while the handler still runs.
      // HEAD: Hono drops the body unread (drainHead)
      const sendsBody = c.req.method !== "HEAD";
      if (tracker === undefined) {
        const res = outgoing as ServerResponse;
        // the answer is committed when the server writes its head, after the middleware around the
        // route, or earlier by a handler writing to the Node response itself (RESPONSE_ALREADY_SENT)
        // the Response's headers, handed to writeHead by the server (the route returned one to
        // send), are kept on the 409 as at the route's return (replaceLostAnswer); those of a
        // handler's own writeHead on the Node response are its answer's, and go with it
        guardLostAnswer(res, outcome.held, () => returned && !sentItself(c));
        try {
          await outcome.held.run(next);
          returned = true;
          // the same Response answered with again, whose whole body a HEAD request drained
          const again = servedAgain(c.res);
          if (again !== undefined) setResponse(c, again);
          // the handler's Response, replaced with its headers kept; one committed already stays
          if (!res.headersSent) replaceLostAnswer(c, outcome.held, cancelBody);
          // a lock lost while it is drained is asked again at the commit (guardLostAnswer)
          if (!sendsBody) await drainHead(c, outcome.held);
        } finally {
          // nested in a guard of this request: the guard's chain sees its own lock again after next()
          if (requestLock !== undefined) c.set("lock", requestLock);
        }
        return;
      }
      // Every Response set on c.res from now on is followed, the route's and any a middleware
      // around it puts in its place after it returned (tracker.follow). A HEAD response is over
      // once its dropped body is, below.
      let followed: Response | undefined;
      const following =
        sendsBody &&
        followResponses(c, (response) => {
          followed = tracker.follow(response);
          return followed;
        });
      try {
        // Asked within the followed run: a Response without a body (a redirect, a 204) ended the
        // tracker when it was set, and the lock, released once the run settles, would then read
        // as released rather than lost. The 409 set in its place is followed in its turn.
        await outcome.held.run(async () => {
          await next();
          replaceLostAnswer(c, outcome.held, (old) => tracker.discard(old));
        });
        if (!sendsBody) {
          await drainHead(c, outcome.held);
          // lost while the body was drained: the answer is not out yet (on Node: guardLostAnswer)
          replaceLostAnswer(c, outcome.held, cancelBody);
        }
      } catch (error) {
        // Hono turns a handler's Error into onError's response; anything else thrown ends here
        tracker.end();
        throw error;
      } finally {
        if (requestLock !== undefined) c.set("lock", requestLock);
      }
      if (!sendsBody) tracker.end();
      // an answer that did not come through the setter: Hono's getter made it, or c has no accessor
      else if (followed === undefined || !following) setResponse(c, following ? c.res : tracker.follow(c.res));
    });
  };
}

/**
 * The response `held.lostAnswer()` puts in place of the handler's when the lock was lost under a
 * success or redirect (a handler that ignored `c.var.lock.signal`): its 409 JSON, the old body
 * cancelled (its producer told), the old response's headers kept but those describing its body.
 * The status is read from Hono's own response: on `@hono/node-server` a plain body keeps its fast path.
 */
function replaceLostAnswer(c: Context, held: HeldRoute, discard: (old: Response) => void): void {
  const old = c.res;
  const answer = held.lostAnswer(old.status);
  if (answer === undefined) return;
  discard(old);
  const headers = new Headers(old.headers);
  for (const name of REPLACED_ANSWER_HEADERS) headers.delete(name);
  for (const [name, value] of Object.entries(answer.headers)) headers.set(name, value);
  headers.set("content-type", JSON_TYPE);
  setResponse(c, new Response(JSON.stringify(answer.body), { status: answer.status, headers }));
}

/**
 * Whether the route's Response says its handler wrote the Node response itself
 * (`RESPONSE_ALREADY_SENT`, whose marker header `@hono/node-server` reads).
 */
function sentItself(c: Context): boolean {
  return c.res.headers.has("x-hono-already-sent");
}

/** The type of the JSON the middleware answers itself, as the other adapters send it. */
const JSON_TYPE = "application/json; charset=utf-8";

/**
 * `c.res = response`, cleared first: Hono's setter would merge the old response's headers back in,
 * over the new one's (a `Cache-Control` a middleware set on `c.res` before, as `cors()` sets its own).
 */
function setResponse(c: Context, response: Response): Response {
  c.res = undefined;
  c.res = response;
  return response;
}

const cancelBody = (response: Response): void => {
  response.body?.cancel().catch(() => {});
};

/**
 * HEAD: Hono answers with the GET route's status and headers and drops the body unread, while a
 * streamed body's producer (a `stream()` callback) goes on as for a GET. The body is drained here
 * (data discarded) and the answer waits for its end, as a GET's does and as on Koa and Fastify: a
 * client that leaves meanwhile is seen, the body stopped (core's followDropped) and the lock left
 * to lapse. Answered at once, a client that then closes its connection is never seen to leave, and
 * an endless body (an event feed) was read, its lock extended, until `maxHoldMs`. The middleware
 * around the route get the same status and headers, with the bytes of a body that came whole
 * (an etag() hashes them); those of a streamed body are gone.
 */
async function drainHead(c: Context, held: HeldRoute): Promise<void> {
  const response = c.res;
  const drained = held.followDropped(response);
  if (drained !== undefined) await drained;
  // a body read whole, now or by an earlier request answered with the same Response
  const whole = servedAgain(response);
  if (whole !== undefined) setResponse(c, whole);
  else if (drained !== undefined) {
    const { status, statusText, headers } = response;
    setResponse(c, new Response(null, { status, statusText, headers }));
  }
}

/**
 * Whether a step around the route has answered since now: an outer `timeout()` that fired while the
 * route waited for its lock set its 504 on `c.res` (`finalized`), and the server sent it. Off the
 * Node response nothing else says so; a context answered already (an odd middleware that set `c.res`
 * and then called `next()`) is not told apart.
 */
function answeredLater(c: Context): (() => boolean) | undefined {
  return c.finalized ? undefined : () => c.finalized;
}

/**
 * `@hono/node-server`'s Node response (`c.env.outgoing`, HTTP/1), followed like Express's: "done"
 * when the server has sent it, or ended it after its client left while the handler ran. Reading
 * the `Response` instead costs the server its fast path for plain bodies (a Response and a stream
 * built for a string: bench/, "HTTP: hono"). Other runtimes have no such object.
 */
function nodeResponse(c: Context): ServerResponse | undefined {
  const outgoing = (c.env as { outgoing?: Partial<ServerResponse> } | undefined)?.outgoing;
  // HTTP/1's ServerResponse; an HTTP/2 one has no `destroyed`, and is read as a Response
  return typeof outgoing?.writableFinished === "boolean" && typeof outgoing.destroyed === "boolean"
    ? (outgoing as ServerResponse)
    : undefined;
}

/**
 * Follows (`follow`) every Response set on `c.res` from now on, for the rest of the request, not only
 * the one there when the route's chain returns: a `timeout()` that answers for the handler sets its
 * own, which the server sends while the handler still runs; a middleware around the route may put
 * another answer in place of the route's after it returned. False for a context without Hono's
 * `res` accessor, left alone (the last one is followed). Wraps the accessor in use, a guard's
 * around this route included: each lock of the request follows what is set.
 */
function followResponses(c: Context, follow: (response: Response) => Response): boolean {
  let accessor: PropertyDescriptor | undefined;
  for (let owner: object | null = c; owner !== null && accessor === undefined; ) {
    accessor = Object.getOwnPropertyDescriptor(owner, "res");
    owner = Object.getPrototypeOf(owner);
  }
  const { get, set } = accessor ?? {};
  if (get === undefined || set === undefined) return false;
  Object.defineProperty(c, "res", {
    configurable: true,
    get: () => get.call(c),
    set: (response: Response | undefined) => set.call(c, response === undefined ? response : follow(response)),
  });
  return true;
}

/**
 * What the key reads, built only when it reads it (a key function reads anything). A plain object:
 * with getters closing over `c` (an object in V8's dictionary mode per request) old space grew
 * about 2.5 MB per scavenge and the garbage collector took a fifth of the server's CPU (bench/,
 * "HTTP: hono").
 */
function keySource(
  c: Context,
  route: { readsQuery: boolean; readsHeaders: boolean },
  body: unknown,
  pathLists: boolean,
): HttpKeySource {
  const params = c.req.param();
  return {
    params: pathLists ? withPathLists(params, c.req) : params,
    query: route.readsQuery ? queryOf(c) : undefined,
    body,
    headers: route.readsHeaders ? c.req.header() : undefined,
  };
}

/** `?id=1` gives `"1"` and `?id=1&id=2` gives `["1", "2"]`, which a template refuses (400), as on Express. */
function queryOf(c: Context): Record<string, string | string[]> {
  // fromEntries defines own properties: "?__proto__=…" cannot reach the prototype
  return Object.fromEntries(
    Object.entries(c.req.queries()).map(([name, values]) => [
      name,
      values.length === 1 ? (values[0] as string) : values,
    ]),
  );
}

/**
 * The JSON body, or `undefined` when there is none or it does not parse (then a `{body.…}` key is a
 * 400). Hono caches it: the handler's own `c.req.json()` (or `text()`) still works.
 */
async function jsonBody(c: Context): Promise<unknown> {
  if (!/json/i.test(c.req.header("content-type") ?? "")) return undefined;
  return c.req.json().catch(() => undefined);
}
