import type { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import {
  answerRejected,
  createHttpLockPolicy,
  errorResponse,
  type HeldRoute,
  type HttpKeySource,
  type HttpLockPolicy,
  type HttpResponse,
  holdingLock,
  isWebBody,
  type KeySpec,
  type Lock,
  LockConfigurationError,
  REPLACED_ANSWER_HEADERS,
  type Redlock,
  RedlockError,
  type RouteLock,
  type RouteLockOptions,
  responseAnswered,
  sendsNoBody,
} from "@redlock-kit/core";
import type {
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
  onSendHookHandler,
  preHandlerHookHandler,
  RouteHandlerMethod,
} from "fastify";
import fp from "fastify-plugin";

/**
 * Sends a custom response instead of the 423 (`onLocked`) or 503 (`onUnavailable`) JSON; the route
 * handler does not run. Send before returning, or return a promise that settles once sent (or
 * `reply`, as a handler that sends later does): a hook that has not called `reply.send()` (nor
 * hijacked the reply, nor called `reply.callNotFound`, `reply.sendFile`, `reply.download` or
 * `reply.view`, which send later) by then gets the default JSON. A throw or rejection goes to Fastify's error handler.
 */
export type FastifyLockHook = (request: FastifyRequest, reply: FastifyReply, error: RedlockError) => unknown;

/** Per-route options (and plugin defaults): `ttl`, `wait`, `autoExtend`, `maxHoldMs`, hooks… see `RouteLockOptions`. */
export type FastifyRedlockRouteOptions = RouteLockOptions<FastifyLockHook>;

/** A route's `config.redlock`: a key (template or function), or the key with options. */
export type RedlockRouteConfig =
  | KeySpec<HttpKeySource>
  | (FastifyRedlockRouteOptions & {
      /** Template such as `"order:{params.id}"`, or a function of `{ params, query, body, headers }`. */
      key: KeySpec<HttpKeySource>;
    });

/** Plugin options: the Redlock instance and the defaults of every locked route. */
export interface FastifyRedlockOptions extends FastifyRedlockRouteOptions {
  /** The Redlock instance locks are taken with; also exposed as `app.redlock`. Never closed by the plugin. */
  redlock: Redlock;
}

declare module "fastify" {
  interface FastifyInstance {
    /** The Redlock instance given to `@redlock-kit/fastify`. */
    redlock: Redlock;
  }
  interface FastifyRequest {
    /** The lock held for this request when its route has `config.redlock`; `null` otherwise. */
    lock: Lock | null;
  }
  interface FastifyContextConfig {
    /** Locks the route: a key such as `"order:{params.id}"`, or `{ key, ttl, wait, … }`. */
    redlock?: RedlockRouteConfig;
  }
}

/** What `app.register(plugin, options)` lets Fastify read from the options it also hands the plugin. */
const REGISTER_OPTIONS = ["prefix", "logLevel", "logSerializers"] as const;

/** Marks the config of a route this plugin locks (Fastify copies `route.config` after the `onRoute` hooks). */
const LOCKED = Symbol("redlock-kit.locked");

const plugin: FastifyPluginAsync<FastifyRedlockOptions> = async function redlockPlugin(fastify, options) {
  const { redlock, ...defaults } = options;
  // Fastify hands a plugin its own register options too: they are not route defaults
  for (const name of REGISTER_OPTIONS) delete (defaults as Record<string, unknown>)[name];
  const policy = createHttpLockPolicy<FastifyLockHook>(redlock, defaults);
  fastify.decorate("redlock", redlock);
  fastify.decorateRequest("lock", null);
  // Read once per route, at registration: a bad config.redlock fails here, not on the first request.
  fastify.addHook("onRoute", function lockRoute(route) {
    const config = route.config?.redlock;
    if (config === undefined) return;
    const handler = lockingPreHandler(redlock, declareRoute(policy, config, `${route.method} ${route.url}`));
    // A new array: the HEAD twin of a GET route shares the caller's original array.
    route.preHandler = [...[route.preHandler ?? []].flat(), handler];
    route.handler = followedHandler(route.handler);
    // Placed once every onRoute hook has run, of plugins registered before or after this one (they
    // may add to the route's onSend hooks; Fastify reads the list after that, once ready).
    this.after(() => {
      route.onSend = withLockedPayload([route.onSend ?? []].flat(), route.method);
    });
    // A new object too: the caller's config may be shared with a route declared before the plugin.
    route.config = { ...route.config, [LOCKED]: true } as typeof route.config;
  });
  // `onRoute` does not see the routes declared before this plugin, but the hooks added here run for
  // them: such a route with config.redlock would run its handler without the lock, so it answers
  // core's configuration error instead (500, fixed body; the message, for the operator, is logged).
  fastify.addHook("onRequest", function refuseEarlyRoute(request, reply, done) {
    const config = request.routeOptions.config as { redlock?: unknown; [LOCKED]?: true };
    if (config.redlock === undefined || config[LOCKED] === true) return done();
    refuseUnlocked(
      request,
      reply,
      "the route was declared before @redlock-kit/fastify was registered and cannot be locked; register the plugin first",
    );
  });
  // A RedlockError a handler throws (a @Locked service's 423) takes the place of the answer earlier
  // steps set up, as a refusal does; Fastify's error handling drops only its Content-Type and
  // Content-Length, so an attachment, gzip or ETag would stay. Fastify runs these hooks before the
  // error handler: what the app's own handler sets stays.
  fastify.addHook("onError", function dropReplacedHeaders(_request, reply, error, done) {
    if (RedlockError.isRedlockError(error) && !reply.sent) {
      for (const name of REPLACED_ANSWER_HEADERS) reply.removeHeader(name);
    }
    done();
  });
};

function declareRoute(policy: HttpLockPolicy<FastifyLockHook>, config: unknown, where: string) {
  try {
    if (typeof config === "string" || typeof config === "function") {
      return policy.route(config as KeySpec<HttpKeySource>);
    }
    if (typeof config === "object" && config !== null && !Array.isArray(config) && Object.hasOwn(config, "key")) {
      const { key, ...routeOptions } = config as Exclude<RedlockRouteConfig, KeySpec<HttpKeySource>>;
      return policy.route(key, routeOptions);
    }
    throw new TypeError(`must be a key template, a key function or an object with a key, got ${kindOf(config)}`);
  } catch (error) {
    if (!(error instanceof Error)) throw error;
    const Kind = error instanceof RangeError ? RangeError : TypeError;
    throw new Kind(`config.redlock of ${where}: ${error.message}`, { cause: error });
  }
}

/** The held route lock of each request that got one, for its handler to be followed. */
const heldRoutes = new WeakMap<FastifyRequest, HeldRoute>();

/**
 * Requests answered with a web body (a ReadableStream, a Response with one). Once the client has
 * left, Fastify cancels such a body and ends the response itself, while the body's producer may
 * still run: that end is not the handler's, and the lock expires within one ttl, as for a Node
 * stream Fastify destroys.
 */
const webBodies = new WeakSet<FastifyRequest>();

/**
 * The route's handler, followed: the lock is released once the reply is sent and the promise the
 * handler returned has settled. A `handlerTimeout` (or a hook that answers for the handler) sends
 * the reply while the handler still runs: the next request must not enter beside it. A handler
 * that returns no promise is done once its reply is sent.
 */
function followedHandler(handler: RouteHandlerMethod): RouteHandlerMethod {
  return function lockedHandler(this: FastifyInstance, request, reply) {
    const held = heldRoutes.get(request);
    // The lock's preHandler never ran: a plugin's onRoute hook replaced the route's preHandler list
    // instead of adding to it. The handler must not run unlocked.
    if (held === undefined) {
      return refuseUnlocked(
        request,
        reply,
        "the route's preHandler list was replaced after @redlock-kit/fastify added its lock to it (by an onRoute hook of a plugin registered later?); add to routeOptions.preHandler instead",
      );
    }
    return held.follow(handler.call(this, request, reply));
  };
}

/** Answers core's configuration error (500, fixed body) for a locked route that cannot be locked; the reason is logged. */
function refuseUnlocked(request: FastifyRequest, reply: FastifyReply, reason: string): FastifyReply {
  const { method, url } = request.routeOptions;
  const error = new LockConfigurationError(`config.redlock of ${method} ${url}: ${reason}`, []);
  request.log.error({ err: error }, error.message);
  const { status, headers, body } = errorResponse(error);
  // as for a refusal: under a Content-Type an earlier hook set, Fastify would not serialize the body
  for (const name of REPLACED_ANSWER_HEADERS) reply.removeHeader(name);
  return reply.code(status).headers(headers).send(body);
}

/**
 * A locked route's onSend hooks: `lockedPayload` last, so that it sees the payload and status
 * actually sent (a route's own hook may return a stream, or make an error a success), but before
 * Fastify's own step of a GET route's HEAD twin (last, by name), which drops the payload. A route
 * with hooks of its own gets `lostPayload` first too, so that they see the 409 rather than a lost
 * success; one without runs one hook, on every locked response (bench/, "HTTP: fastify"). A HEAD
 * route whose step is not found gets `lockedPayload` first.
 */
function withLockedPayload(hooks: onSendHookHandler[], method: unknown): onSendHookHandler[] {
  const headStep = hooks.findIndex((hook) => hook.name === "headRouteOnSendHandler");
  // The step of a HEAD twin whose hooks a plugin wrapped in its onRoute hook (@fastify/otel) has
  // another name and may be any of them: the payload is followed before all, or the step resumes or
  // cancels it and the lock ends beside its producer. (A route's own HEAD method has no such step:
  // a stream a later hook returns is piped, and the answer ends with it.)
  if (headStep === -1 && method === "HEAD") return [lockedPayload, ...hooks];
  const own = hooks.slice(0, headStep === -1 ? hooks.length : headStep);
  const first = own.length > 0 ? [lostPayload] : [];
  return [...first, ...own, lockedPayload, ...hooks.slice(own.length)];
}

/**
 * The payload as the lock needs it. Replaced by `held.lostAnswer()` when the lock was lost under a
 * success or redirect that the handler sent after ignoring `request.lock.signal` (`lostPayload`).
 * Otherwise a payload Fastify drops (a HEAD route's, the HEAD twin of a GET route; a 204's,
 * which Fastify ends at once) is followed: a streamed one's producer goes on as for a 200, so the
 * lock waits for the stream's end, and so does the answer (handed on only then, as Koa and Nest
 * answer): a client that leaves meanwhile is seen, its body stopped and the lock left to lapse.
 * Fastify would cancel a web one (HEAD) or leave it unread (204), whose producer may go on unseen:
 * that one is drained as a Node stream. A web body sent is noted (`webBodies`).
 */
function lockedPayload(request: FastifyRequest, reply: FastifyReply, payload: unknown, done: OnSendDone) {
  const held = heldRoutes.get(request);
  if (held === undefined) return done(null, payload);
  const answer = held.lostAnswer(reply.statusCode);
  if (answer !== undefined) return done(null, lostAnswer(reply, payload, answer));
  // answered at the body's end (a promise: Fastify's hook runner takes it), so that a client that leaves meanwhile is seen
  if (sendsNoBody(request.method, reply.statusCode)) return held.followHandedOn(payload);
  if (isWebBody(payload)) webBodies.add(request);
  return done(null, payload);
}

/** `lockedPayload`'s 409 alone: first of the hooks of a route with hooks of its own. */
function lostPayload(request: FastifyRequest, reply: FastifyReply, payload: unknown, done: OnSendDone) {
  const answer = heldRoutes.get(request)?.lostAnswer(reply.statusCode);
  done(null, answer === undefined ? payload : lostAnswer(reply, payload, answer));
}

/**
 * The lost lock's 409 JSON in place of `payload`, whose own headers are removed; a stream payload
 * is destroyed (a web one cancelled), its producer told.
 */
function lostAnswer(reply: FastifyReply, payload: unknown, answer: HttpResponse): string {
  if (isWebStream(payload)) payload.cancel().catch(() => {});
  else (payload as Partial<Readable> | null)?.destroy?.();
  for (const name of REPLACED_ANSWER_HEADERS) reply.removeHeader(name);
  reply.code(answer.status).headers(answer.headers).type("application/json; charset=utf-8");
  return JSON.stringify(answer.body);
}

function isWebStream(payload: unknown): payload is WebReadableStream {
  return typeof (payload as Partial<WebReadableStream> | null)?.getReader === "function";
}

type OnSendDone = (error: Error | null, payload: unknown) => void;

function lockingPreHandler(redlock: Redlock, route: RouteLock<FastifyLockHook>): preHandlerHookHandler {
  // Runs after body parsing and validation, as the route's last preHandler: auth hooks go first.
  // Callback style: Fastify runs the handler inside done(), so the handler (and a @Locked method it
  // calls) sees the lock as held; a returned promise would resume it outside that context.
  return function redlockPreHandler(request, reply, done) {
    const source = { params: request.params, query: request.query, body: request.body, headers: request.headers };
    route
      .begin(source, reply.raw, () => !webBodies.has(request))
      .then(
        async (outcome) => {
          if (outcome.kind === "acquired") {
            request.lock = outcome.lock;
            heldRoutes.set(request, outcome.held);
            holdingLock(redlock, outcome.lock, done);
            return;
          }
          if (outcome.kind === "aborted") {
            // The client left while we waited: nobody to answer, and the handler must not run.
            reply.hijack();
            return;
          }
          await answerRejected(
            outcome,
            (hook) => callHook(hook, request, reply, outcome.error),
            () => sendCalled.has(reply) || reply.sent || responseAnswered(reply.raw),
            // under a Content-Type set before Fastify refuses to serialize the body (a 500): core removes it first
            ({ status, headers, body }) => reply.code(status).headers(headers).send(body),
            (name) => reply.removeHeader(name),
          );
        },
        (error: unknown) => done(error as Error),
      )
      .catch((error: unknown) => done(error as Error));
  };
}

/** Replies on which a hook called one of `ANSWERS`: Fastify may write the reply some turns later. */
const sendCalled = new WeakSet<FastifyReply>();

/**
 * Reply methods that answer: `send()`, and those that call it only later, and always: Fastify's
 * `callNotFound` (its not-found handler runs after the app's preHandler hooks, maybe async), and
 * those of Fastify's own plugins, once a file's stat is in (@fastify/static's `sendFile` and
 * `download`: the file, an error, or the not-found handler) or a view rendered (@fastify/view's
 * `view`, its default name: the page or the error). A hook that called one of the later ones and
 * returned nothing looked silent, and got the default JSON before their answer, which Fastify then
 * refused ("Reply was already sent").
 */
const ANSWERS = ["send", "callNotFound", "sendFile", "download", "view"] as const;

/**
 * Runs a hook, noting whether it called one of `ANSWERS`: async `onSend` hooks, a stream's first
 * chunk, a file's stat or a view's rendering delay the headers past the hook's end, and the default
 * reply must not be sent beside it. A hook that returns `reply` says it sends it, maybe later, as a
 * Fastify handler does: awaited, the reply settles once sent.
 */
function callHook(hook: FastifyLockHook, request: FastifyRequest, reply: FastifyReply, error: RedlockError) {
  const methods = reply as unknown as Record<(typeof ANSWERS)[number], unknown>;
  for (const name of ANSWERS) {
    const method = methods[name];
    if (typeof method !== "function") continue;
    methods[name] = function answerFromHook(this: FastifyReply, ...args: unknown[]) {
      sendCalled.add(reply);
      return Reflect.apply(method, this, args);
    };
  }
  return hook(request, reply, error);
}

function kindOf(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
}

/**
 * Fastify plugin: routes with `config: { redlock: "order:{params.id}" }` (or `{ key, ttl, wait, … }`)
 * take the lock in a preHandler, after body parsing; `request.lock` holds it, and it is released
 * once the reply has been sent, streams included, and the promise the handler returned has settled. Contention answers 423 with `Retry-After`,
 * unavailable Redis 503, an unresolvable key 400, all as JSON. Register it before the routes: a
 * route with `config.redlock` declared earlier cannot be locked, and answers 500 (a
 * `LockConfigurationError`) instead of running.
 *
 * @example
 * await app.register(redlockPlugin, { redlock: dlm, ttl: 1000 });
 * app.post("/orders/:id/pay", { config: { redlock: "order:{params.id}" } }, async (request) => {
 *   return { paid: true, until: request.lock?.expiresAt };
 * });
 */
export const redlockPlugin = fp(plugin, { fastify: "5.x", name: "@redlock-kit/fastify" });
