import type { ServerResponse } from "node:http";
import { LockKeyError, LockLostError, RedlockError } from "../errors.js";
import { autoExtend } from "../lock/auto-extend.js";
import {
  checkDeclaredWith,
  DECLARED_LOCK_KEYS,
  type DeclaredLockOptions,
  type ResolvedDeclaredLock,
  resolveDeclaredLock,
} from "../lock/declared-lock.js";
import { holdingLock } from "../lock/held-locks.js";
import { type Lock, STATE } from "../lock/lock.js";
import { unfencedReentry } from "../lock/reentries.js";
import { type AcquireOptions, checkOptionsObject, type ResolvedHoldOptions } from "../options.js";
import type { Redlock } from "../redlock.js";
import { UnfenceableKeyError } from "../stores/script-calls.js";
import { checkFunction } from "../validate.js";
import { drainDroppedBody, droppedPayload } from "./dropped-body.js";
import {
  checkHeaderNames,
  checkKeyWith,
  checkPrefixedKeys,
  compileKey,
  type KeyResolver,
  type KeySpec,
  keyReads,
} from "./key-template.js";
import { requestHolding, takenWithin } from "./request-locks.js";
import { ResponseTracker, type TrackedResponse } from "./response-done.js";

/** What an HTTP key template reads: `"order:{params.id}"`, `"{headers.x-tenant}"`, `"{body.sku}"`. */
export interface HttpKeySource {
  readonly params: unknown;
  readonly query: unknown;
  readonly body: unknown;
  readonly headers: unknown;
}

/** Options of a locked route; `Hook` is the adapter's custom-response callback type. */
export interface RouteLockOptions<Hook = never> extends DeclaredLockOptions {
  /**
   * Lock ttl in ms. With `autoExtend` the lock is renewed while the request is in flight, so the ttl
   * bounds how long a crashed process blocks others, not how long a handler may run.
   * @default 5000
   */
  ttl?: number;
  /**
   * How long to wait for a held lock, in ms, before answering 423. `0` answers at once.
   * @default 0
   */
  wait?: number;
  /**
   * Renew the lock while the client waits for the response (up to `maxHoldMs`). Once the client has
   * left, the lock is no longer renewed and expires within one ttl unless the response ends first.
   * @default true
   */
  autoExtend?: boolean;
  /** Writes a custom response instead of the 423 JSON. */
  onLocked?: Hook;
  /** Writes a custom response instead of the 503 JSON. */
  onUnavailable?: Hook;
}

/** Status, headers and JSON body of an outcome that is not "go ahead". */
export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: { readonly error: string };
}

export type RouteOutcome<Hook> =
  /** `held.run()`/`held.follow()` the handler where the adapter can see it settle: the lock then waits for it too. */
  | { readonly kind: "acquired"; readonly lock: Lock; readonly held: HeldRoute }
  /** Contention (423), unavailability (503) or an unresolvable key (400): write `response`, or call `hook`. */
  | { readonly kind: "rejected"; readonly error: RedlockError; readonly response: HttpResponse; readonly hook?: Hook }
  /** The client left, or another step answered, while waiting for the lock; nothing is held and nobody is listening. */
  | { readonly kind: "aborted" };

/**
 * What `begin()` gives when it is handed the lock the request already holds (`req.lock`): also
 * `reentered`, the request holding every resource of the route already, through the same Redlock,
 * with valid locks (a router-level guard on the same key): run the rest of the request (`next`) as
 * it is, with `lock` on the request; nothing was acquired, nothing is to release.
 */
export type NestedRouteOutcome<Hook> = RouteOutcome<Hook> | { readonly kind: "reentered"; readonly lock: Lock };

/** A request the route refused the lock: contention (423), unavailability (503) or a bad key (400). */
export type RejectedOutcome<Hook> = Extract<RouteOutcome<Hook>, { kind: "rejected" }>;

/**
 * Answers a `rejected` outcome: with its hook, or its default response (`write`). The hook runs
 * first and the promise it returns is awaited; a request still not `answered()` then (the hook only
 * logged, or resolved without answering) gets the default response, so that a hook never leaves
 * it hanging. A hook that throws or rejects rejects here, as a handler would, for the framework's
 * error handling: nothing is written over what it may have started.
 *
 * The refusal takes the place of the answer earlier steps were setting up (`res.attachment()`, a
 * `Content-Encoding`, a public `Cache-Control`): `removeHeader` is called with each of
 * `REPLACED_ANSWER_HEADERS` before the hook runs, so that it answers without them, and again
 * before the default response, whose JSON must not go out under a type, encoding or validator a
 * silent hook or an earlier step set. What a hook sets on its own answer stays. Without
 * `removeHeader` nothing is removed.
 */
export async function answerRejected<Hook>(
  outcome: RejectedOutcome<Hook>,
  callHook: (hook: Hook) => unknown,
  answered: () => boolean,
  write: (response: HttpResponse) => void,
  removeHeader?: (name: string) => void,
): Promise<void> {
  if (outcome.hook !== undefined) {
    removeReplacedHeaders(removeHeader);
    await callHook(outcome.hook);
    if (answered()) return;
  }
  removeReplacedHeaders(removeHeader);
  write(outcome.response);
}

function removeReplacedHeaders(removeHeader: ((name: string) => void) | undefined): void {
  if (removeHeader !== undefined) for (const name of REPLACED_ANSWER_HEADERS) removeHeader(name);
}

/**
 * The response that belongs to a `RedlockError` (423 with Retry-After, 503, 409, 400 or 500), with
 * `Cache-Control: no-store` (`ERROR_ANSWER_HEADERS`) to set over one the app set before; fixed
 * bodies, no internals.
 */
export function errorResponse(error: RedlockError): HttpResponse {
  return { status: error.status, headers: error.headers, body: error.body };
}

/**
 * The headers of an answer replaced by `HeldRoute.lostAnswer()`, or by a refusal (`answerRejected`),
 * that describe its body, how it is framed (Transfer-Encoding beside the 409's Content-Length is a
 * malformed response; a Trailer without chunked framing makes Node throw) or how long it may be
 * cached (the library's answers carry their own `Cache-Control: no-store`), or point elsewhere (a
 * redirect's Location): removed with it, lower case. The answer's other headers (a request id,
 * `Set-Cookie`, CORS, `Vary`) stay.
 */
export const REPLACED_ANSWER_HEADERS: readonly string[] = Object.freeze([
  "cache-control",
  "content-digest",
  "content-disposition",
  "content-encoding",
  "content-language",
  "content-length",
  "content-location",
  "content-range",
  "content-type",
  "etag",
  "expires",
  "last-modified",
  "location",
  "trailer",
  "transfer-encoding",
]);

interface ResolvedRouteOptions<Hook> {
  /** The options every declared lock shares, resolved once: the base of a route's own. */
  readonly declared: ResolvedDeclaredLock;
  readonly ttl: number;
  readonly autoExtend: boolean;
  readonly acquire: AcquireOptions;
  /** `wait` > 0: the acquisition may sleep, and must stop when the client leaves. */
  readonly waits: boolean;
  readonly hold: ResolvedHoldOptions;
  readonly onLocked: Hook | undefined;
  readonly onUnavailable: Hook | undefined;
}

/** A lock declared on one route: the key resolved per request, options resolved once. */
export class RouteLock<Hook = never> {
  readonly #redlock: Redlock;
  readonly #resolve: KeyResolver<HttpKeySource>;
  readonly #options: ResolvedRouteOptions<Hook>;

  /**
   * Whether the key reads the query string. Express 5 parses it on every read of `req.query` and
   * Koa on the first: adapters pass `query: undefined` when the key does not use it.
   */
  readonly readsQuery: boolean;

  /** Whether the key reads the body: adapters that must parse it themselves (Hono) do so only then. */
  readonly readsBody: boolean;

  /** Whether the key reads the headers: adapters that must build them (Hono) do so only then. */
  readonly readsHeaders: boolean;

  constructor(redlock: Redlock, key: KeySpec<HttpKeySource>, options: ResolvedRouteOptions<Hook>) {
    this.#redlock = redlock;
    this.#resolve = compileKey(key);
    checkHeaderNames(key);
    checkKeyWith(key, redlock, options.acquire.fencing);
    this.readsQuery = keyReads(key, "query");
    this.readsBody = keyReads(key, "body");
    this.readsHeaders = keyReads(key, "headers");
    this.#options = options;
  }

  /**
   * Call before the first `await` of the request: resolves the key, acquires (giving up if the
   * client leaves while waiting; nothing is sent for a request already over), keeps the lock alive
   * while the client waits for the response (not after it left: the lock then expires within one
   * ttl), and releases it exactly once when
   * the handler has finished the response (or failed) and every run followed with the outcome's
   * `held` has settled. `handlerEndsLater`: whether an `end()` after the client left still means
   * the handler finished, asked when it leaves and again at that end (yes when not given).
   */
  begin(source: HttpKeySource, res: ServerResponse, handlerEndsLater?: () => boolean): Promise<RouteOutcome<Hook>>;
  /**
   * `requestLock`: the lock an enclosing route of this request put on it (`req.lock`), if any. The
   * resources the request holds through it (or through the locks it was taken within) with this
   * route's Redlock are not locked again: all of them, `reentered`; some, the others are locked. A
   * lock of the request on one of them that is no longer valid gives `rejected` with its
   * `LockLostError` (409), and one without fences under a route with `fencing: true` a
   * `LockConfigurationError` (500): the handler never runs believing it holds what it does not.
   */
  begin(
    source: HttpKeySource,
    res: ServerResponse,
    handlerEndsLater: (() => boolean) | undefined,
    requestLock: Lock | null | undefined,
  ): Promise<NestedRouteOutcome<Hook>>;
  begin(
    source: HttpKeySource,
    res: ServerResponse,
    handlerEndsLater?: () => boolean,
    requestLock?: Lock | null,
  ): Promise<NestedRouteOutcome<Hook>> {
    return this.beginTracked(source, new ResponseTracker(res, handlerEndsLater), requestLock);
  }

  /** `begin` for a response followed by the adapter's own tracker (e.g. a `FetchResponseTracker`). */
  beginTracked(source: HttpKeySource, tracker: TrackedResponse): Promise<RouteOutcome<Hook>>;
  /** `begin` with the lock the request already holds (`requestLock`), for a response followed by the adapter's own tracker. */
  beginTracked(
    source: HttpKeySource,
    tracker: TrackedResponse,
    requestLock: Lock | null | undefined,
  ): Promise<NestedRouteOutcome<Hook>>;
  beginTracked(
    source: HttpKeySource,
    tracker: TrackedResponse,
    requestLock?: Lock | null,
  ): Promise<NestedRouteOutcome<Hook>> {
    if (tracker.clientLeft || tracker.finished === true) {
      // over before the route asked (the client left, or another step answered, during an earlier
      // awaited step): nobody to answer, so nothing is sent; taking the key would refuse a live request
      tracker.dispose();
      return Promise.resolve(ABORTED);
    }
    const options = this.#options;
    let resources: readonly string[];
    try {
      resources = this.#resolve(source);
      if (resources.length > 1 || this.#redlock.keyPrefix !== "") checkKeys(this.#redlock, resources);
    } catch (error) {
      // a promise either way: #failed rethrows what is not a RedlockError
      return new Promise((resolve) => resolve(this.#failed(error, tracker)));
    }
    // Only a wait needs a signal to stop; a single attempt is checked for a departed client below.
    const acquire = options.waits ? { ...options.acquire, signal: tracker.signal } : options.acquire;
    if (requestLock != null) return this.#within(requestLock, resources, acquire, tracker);
    // Callbacks rather than an async function: this runs for every locked request (bench/).
    return this.#redlock.acquire(resources, options.ttl, acquire).then(
      (lock) => this.#acquired(lock, tracker),
      (error: unknown) => this.#failed(error, tracker),
    );
  }

  /**
   * A route nested in another of its request (a router-level guard): the resources the request
   * holds already are not locked again, so that it does not wait for itself.
   */
  #within(
    requestLock: Lock,
    resources: readonly string[],
    acquire: AcquireOptions,
    tracker: TrackedResponse,
  ): Promise<NestedRouteOutcome<Hook>> {
    const holding = requestHolding(this.#redlock, requestLock, resources);
    // the handler would run outside the critical section it was nested in: the enclosing route
    // would answer its success 409 anyway, after its work
    const refusal: RedlockError | undefined =
      holding.lost !== undefined
        ? lostErrorOf(holding.lost, "before a route nested in it ran")
        : unfencedReentry(
            this.#redlock,
            this.#options.acquire.fencing,
            holding.unfenced,
            resources,
            "A route that fences (its fencing: true, or its Redlock's) is nested in a route of its request that holds its resources without fencing: give that route fencing: true too",
          );
    if (refusal !== undefined) return Promise.resolve(this.#failed(refusal, tracker));
    if (holding.pending.length === 0) {
      tracker.dispose();
      return Promise.resolve({ kind: "reentered", lock: holding.lock as Lock });
    }
    return this.#redlock.acquire(holding.pending, this.#options.ttl, acquire).then(
      (lock) => {
        // a route nested deeper finds the request's other locks through this one
        takenWithin(lock, requestLock);
        return this.#acquired(lock, tracker);
      },
      (error: unknown) => this.#failed(error, tracker),
    );
  }

  #acquired(lock: Lock, tracker: TrackedResponse): RouteOutcome<Hook> | Promise<RouteOutcome<Hook>> {
    if (tracker.clientLeft || tracker.finished === true) {
      // the lock arrived after the client left, or after another step finished the response (a
      // timeout's 503): nobody will use it, and the handler must not run without it
      tracker.dispose();
      return this.#redlock.unlock(lock).then(() => ABORTED);
    }
    const redlock = this.#redlock;
    const options = this.#options;
    const stop = options.autoExtend ? autoExtend(redlock, lock, options.ttl, options.hold) : undefined;
    return { kind: "acquired", lock, held: new HeldRoute(redlock, lock, stop, tracker) };
  }

  #failed(thrown: unknown, tracker: TrackedResponse): RouteOutcome<Hook> {
    tracker.dispose();
    // the request named the resource, as for resources a Cluster cannot lock together (checkKeys)
    const error =
      thrown instanceof UnfenceableKeyError
        ? new LockKeyError(
            "Lock key names a resource whose fence counter cannot share its hash slot on a Redis Cluster",
            undefined,
            { cause: thrown },
          )
        : thrown;
    if (tracker.clientLeft && !RedlockError.isRedlockError(error)) return ABORTED;
    if (!RedlockError.isRedlockError(error)) throw error;
    // another step answered while the route waited (a timeout's 503): writing over it would throw
    if (tracker.finished === true) return ABORTED;
    const options = this.#options;
    const hook = error.status === 423 ? options.onLocked : error.status === 503 ? options.onUnavailable : undefined;
    return { kind: "rejected", error, response: errorResponse(error), hook };
  }
}

const ABORTED = Object.freeze({ kind: "aborted" as const });

/**
 * A route's lock once acquired: released exactly once, when the response is done and every handler
 * run followed here has settled. A timeout that answers for the handler (Fastify's `handlerTimeout`,
 * Hono's `timeout()`, a Nest interceptor) finishes the response while the handler goes on: releasing
 * then would let the next request run the critical section alongside it. Until then the lock is
 * extended as for any running handler (up to `maxHoldMs`, and not once the client has left).
 * A handler that is never followed (Express, which cannot see its handler settle) is not waited for.
 */
export class HeldRoute {
  readonly lock: Lock;
  readonly #redlock: Redlock;
  readonly #stop: (() => void) | undefined;
  /** The response, until done, and each followed handler run that has not settled. */
  #pending = 1;
  /** The followed runs that have not settled: `running`. */
  #running = 0;
  /** The unlock, once started; what `whenReleased()` returned before it, and how to resolve it. */
  #unlocking: Promise<boolean> | undefined;
  #whenReleased: Promise<void> | undefined;
  #onReleased: (() => void) | undefined;
  /** The client left before the response was done. */
  #clientLeft = false;
  /** Aborts when the client leaves: stops the bodies `followDropped` reads (a HEAD request's). */
  #stopDropped: AbortController | undefined;
  /** Dropped bodies `followDropped` is reading. */
  #draining = 0;
  /** A dropped body was stopped because its client left: the response's end after that is not the handler's. */
  #droppedStopped = false;

  constructor(redlock: Redlock, lock: Lock, stop: (() => void) | undefined, response: TrackedResponse) {
    this.#redlock = redlock;
    this.lock = lock;
    this.#stop = stop;
    response.whenDone(this.#responseDone);
    response.whenClientLeaves(this.#onClientLeft);
  }

  /** Whether the lock was released (the response is done, every followed run settled): code starting now runs unlocked. */
  get released(): boolean {
    return this.#pending === 0;
  }

  /**
   * The lock's `LockLostError` when it is no longer valid (its renewals failed, or its validity
   * ended: `autoExtend` off, `maxHoldMs` reached, the client gone) while the route still holds it:
   * not released, by the route or by the handler itself. One clock read: unlike `lock.signal`,
   * it arms no timer.
   */
  lostError(): LockLostError | undefined {
    const lock = this.lock;
    if (lock.valid) return undefined;
    if (lock[STATE].released) return undefined;
    return lostErrorOf(lock, "before the response was sent");
  }

  /**
   * What must go out instead of an answer of `status` about to be committed (its headers not sent
   * yet): the 409 `{"error":"Lock was lost"}` of `lostError()` for a success or redirect whose
   * lock was lost, so that a handler that ignored `lock.signal` does not report a critical section
   * that may not have run alone as done. `undefined` otherwise: the lock is intact, or the answer
   * is the handler's own error (4xx/5xx), which stays.
   */
  lostAnswer(status: number): HttpResponse | undefined {
    if (status >= 400) return undefined;
    const error = this.lostError();
    return error === undefined ? undefined : errorResponse(error);
  }

  /**
   * Whether a run followed here (`run()`, `follow()`) has not settled:
   * the critical section may still be at work. A run the request starts again meanwhile (an
   * outer rxjs `retry()` after a `timeout()` gave up on the first) would run beside it, so it
   * must not re-enter this lock then; once every run has settled (a retry after a failure) it may.
   */
  get running(): boolean {
    return this.#running > 0;
  }

  /** `fn` (the rest of the request) run holding the lock, followed: the lock waits for what it returns to settle. */
  run<T>(fn: () => T): T {
    return this.follow(holdingLock(this.#redlock, this.lock, fn));
  }

  /**
   * Follows a handler run: when `result` is a promise, the lock is not released before it settles.
   * A run that starts once the lock is released (the response was done first) is not waited for.
   * Hand on what it returns: `result`, or for a thenable that is not a promise, a promise of it.
   */
  follow<T>(result: T): T {
    const pending = result as { then?: unknown } | null | undefined;
    if (this.#pending === 0 || typeof pending?.then !== "function") return result;
    this.#pending++;
    this.#running++;
    // A query builder (Drizzle's, Knex's) runs its query on every then(): resolved once here, the
    // framework awaits that promise, not the builder again (a payment would be written twice).
    const settled = Promise.resolve(result as PromiseLike<unknown>);
    // registered before the framework awaits it: a retry its failure starts sees the run settled
    settled.then(this.#runSettled, this.#runSettled);
    return settled as T;
  }

  /**
   * Resolves once the lock has been released (the unlock settled, whatever it found), or once its
   * client left and its validity then ended unrenewed: what an app's shutdown waits for before
   * closing the clients that extend and release it. A streamed response whose client left may
   * never end (the framework destroys or unpipes its stream and ends nothing): waiting for its
   * release would hold the shutdown up for good, while nothing but a release that finds the key
   * gone can still go through the clients.
   */
  whenReleased(): Promise<void> {
    if (this.#unlocking !== undefined) return this.#unlocking.then(noop, noop);
    if (this.#whenReleased === undefined) {
      this.#whenReleased = new Promise((resolve) => {
        this.#onReleased = resolve;
      });
      if (this.#clientLeft) this.#untilLapsed();
    }
    return this.#whenReleased;
  }

  /**
   * A body the framework drops unsent (a HEAD request's), read to its end with the data discarded,
   * and followed: the lock is not released before it has ended, failed or been destroyed. A
   * streamed body's producer goes on after the HEAD response as after a GET's, and may be the
   * critical section's work. Plain bodies (not a stream) are not waited for. Resolves at that end.
   * Once the client has left, the body is destroyed (a web one cancelled), as a GET's whose reader
   * left is: its producer is told, and an endless one is not read for ever. Its producer may still
   * run then: the end the framework writes after that (Nest's and Koa's answer wait for the body's
   * end) is not the handler's, and the lock, no longer extended, lapses within one ttl.
   */
  followDropped(body: unknown): Promise<void> | undefined {
    this.#stopDropped ??= new AbortController();
    if (this.#clientLeft) this.#stopDropped.abort();
    const drained = drainDroppedBody(body, this.#stopDropped.signal);
    if (drained === undefined) return undefined;
    if (this.#clientLeft) this.#droppedStopped = true;
    this.#draining++;
    void drained.then(() => this.#draining--);
    return this.follow(drained);
  }

  /**
   * `followDropped` for a payload the framework is still handed and drops itself, answering at once
   * (Fastify's HEAD route, its 204): resolves with what to hand it, a web stream turned into a Node
   * stream (`droppedPayload`), once that body has ended (at once for a plain body). Handed on then,
   * the answer waits for the body's end, as Koa's and Nest's do: a client that leaves meanwhile is
   * seen, its body stopped and the lock left to lapse. Answered at once, a client that then closes
   * its connection has left nothing, and an endless body would be read, its lock extended, until
   * `maxHoldMs`.
   */
  async followHandedOn(payload: unknown): Promise<unknown> {
    const body = droppedPayload(payload);
    await this.followDropped(body);
    return body;
  }

  /**
   * Nobody reads the response any more: the lock stays held (the handler may still be running) but
   * is not extended, so it expires within one ttl; lock.signal aborts when it does. A streaming
   * handler that stops writing without ending the response cannot pin it until the cap.
   */
  readonly #onClientLeft = (): void => {
    this.#stop?.();
    this.#clientLeft = true;
    if (this.#draining > 0) this.#droppedStopped = true;
    this.#stopDropped?.abort();
    if (this.#onReleased !== undefined) this.#untilLapsed();
  };

  /** Resolves `whenReleased()` once the lock's validity has ended (its signal aborts), if it is not released before. */
  #untilLapsed(): void {
    const lapsed = this.#onReleased as () => void;
    const signal = this.lock.signal;
    if (signal.aborted) lapsed();
    else signal.addEventListener("abort", () => lapsed(), { once: true });
  }

  /** The response is done: not the handler's end once a dropped body was stopped for its client's leaving. */
  readonly #responseDone = (): void => {
    if (!this.#droppedStopped) this.#settle();
  };

  /** A followed run has settled. */
  readonly #runSettled = (): void => {
    this.#running--;
    this.#settle();
  };

  /** One of the awaited things is over (the response, or a followed run): releases after the last. */
  readonly #settle = (): void => {
    if (this.#pending === 0 || --this.#pending > 0) return;
    this.#stop?.();
    this.#unlocking = this.#redlock.unlock(this.lock);
    if (this.#onReleased !== undefined) this.#unlocking.then(this.#onReleased, this.#onReleased);
  };
}

const noop = (): void => {};

/** Why `lock` is no longer valid: its renewal's failure, or its validity ended `when`. */
const lostErrorOf = (lock: Lock, when: string): LockLostError =>
  lock[STATE].lost ?? new LockLostError(lock.resources, `Lock validity ended ${when}`);

/**
 * The request named the resources, so a name the Redlock's keyPrefix turns into one of the library's
 * own keys, or several resources that cannot be locked together (not in one hash slot on a
 * Cluster), are a 400, not the TypeError or RangeError (500) a direct call gets.
 */
function checkKeys(redlock: Redlock, resources: readonly string[]): void {
  const keys = checkPrefixedKeys(redlock.keyPrefix, resources);
  if (keys.length === 1) return;
  for (const store of redlock.stores) {
    try {
      store.checkKeys?.(keys);
    } catch (error) {
      // the store's message lists the keys, which may hold request data: it stays the cause
      throw new LockKeyError("Lock key function named resources that cannot be locked together", undefined, {
        cause: error,
      });
    }
  }
}

/**
 * The HTTP policy every adapter shares: defaults resolved once, then one `RouteLock` per route.
 *
 * @example
 * const policy = createHttpLockPolicy(dlm, { ttl: 1000 });
 * const route = policy.route("order:{params.id}", { wait: 2000 });
 */
export function createHttpLockPolicy<Hook = never>(redlock: Redlock, defaults?: RouteLockOptions<Hook>) {
  // Every adapter takes the instance from user code (Fastify from plugin options): refuse a missing
  // one by name here rather than with "cannot read properties of undefined" from deeper down.
  if (typeof (redlock as Partial<Redlock> | null | undefined)?.acquire !== "function") {
    throw new TypeError(`redlock must be a Redlock instance, got ${redlock === null ? "null" : typeof redlock}`);
  }
  const base = resolveRouteOptions<Hook>(redlock, undefined, defaults, "defaults");
  return {
    redlock,
    /** Declares the lock of one route. Throws `TypeError`/`RangeError` for a bad key or option, at definition. */
    route(key: KeySpec<HttpKeySource>, options?: RouteLockOptions<Hook>): RouteLock<Hook> {
      const resolved = resolveRouteOptions(redlock, base, options, "options");
      // a combination no request could lock with fails here, not as a 500 on every request (not
      // done for the defaults alone: the routes may all set a ttl of their own)
      checkDeclaredWith(redlock, resolved.declared, "options");
      return new RouteLock(redlock, key, resolved);
    },
  };
}

export type HttpLockPolicy<Hook = never> = ReturnType<typeof createHttpLockPolicy<Hook>>;

/** The options a route takes: a declared lock's and the adapters' own. */
const ROUTE_KEYS: ReadonlySet<string> = new Set([...DECLARED_LOCK_KEYS, "autoExtend", "onLocked", "onUnavailable"]);

/**
 * Refuses an option a route does not take, as `@Locked` does: ignored, a misspelt `wait` or a
 * `retryCount` (routes wait by time) would answer 423 at once with no sign of why.
 */
function checkRouteKeys(options: object | undefined, name: string): void {
  if (options === undefined) return;
  for (const key of Object.keys(options)) {
    if (ROUTE_KEYS.has(key)) continue;
    const hint = key === "retryCount" ? " (use wait: the total ms to keep trying)" : "";
    throw new TypeError(`${name}.${key} is not a route lock option${hint}`);
  }
}

function resolveRouteOptions<Hook>(
  redlock: Redlock,
  base: ResolvedRouteOptions<Hook> | undefined,
  options: RouteLockOptions<Hook> | undefined,
  name: string,
): ResolvedRouteOptions<Hook> {
  checkOptionsObject(name, options);
  checkRouteKeys(options, name);
  const get = <K extends keyof RouteLockOptions<Hook>>(key: K) =>
    options && Object.hasOwn(options, key) && options[key] !== undefined ? options[key] : undefined;
  const extend = get("autoExtend");
  if (extend !== undefined && typeof extend !== "boolean") {
    throw new TypeError(`${name}.autoExtend must be a boolean, got ${typeof extend}`);
  }
  const onLocked = get("onLocked");
  const onUnavailable = get("onUnavailable");
  const declared = resolveDeclaredLock(options, name, base?.declared);
  return Object.freeze({
    declared,
    ttl: declared.ttl,
    autoExtend: extend ?? base?.autoExtend ?? true,
    acquire: declared.acquire,
    waits: (declared.acquire.wait ?? 0) > 0,
    hold: redlock.resolveHoldOptions(declared.hold),
    onLocked: onLocked === undefined ? base?.onLocked : (checkFunction(`${name}.onLocked`, onLocked) as Hook),
    onUnavailable:
      onUnavailable === undefined
        ? base?.onUnavailable
        : (checkFunction(`${name}.onUnavailable`, onUnavailable) as Hook),
  });
}
