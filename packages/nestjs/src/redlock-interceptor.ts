import { AsyncResource } from "node:async_hooks";
import type { ServerResponse } from "node:http";
import {
  type CallHandler,
  type ExecutionContext,
  HttpException,
  HttpStatus,
  Inject,
  Injectable,
  type NestInterceptor,
} from "@nestjs/common";
import { HTTP_CODE_METADATA } from "@nestjs/common/constants.js";
import { HttpAdapterHost } from "@nestjs/core";
import {
  guardLostAnswer,
  type HeldRoute,
  type HttpKeySource,
  holdingLock,
  type Lock,
  RedlockError,
  type RouteLock,
  sendsNoBody,
} from "@redlock-kit/core";
import { catchError, concatMap, map, Observable, throwError } from "rxjs";
import { RedlockAppBinding } from "./app-binding.js";
import { handlingWith } from "./bound-redlocks.js";
import { afterDroppedBody, followReplyPayloads } from "./dropped-body.js";
import { setErrorHeaders } from "./error-headers.js";
import { httpExceptionFor, LockedException } from "./locked-exception.js";
import { awaitHandler, awaitingHandler, carriesHttp, heldRouteOf, markLocked } from "./locked-requests.js";

/** What the interceptor reads from Express's and Fastify's request objects alike. */
interface PlatformRequest extends HttpKeySource {
  method: string;
  lock?: Lock;
}

/**
 * The status the answer goes out with, as Express's response and Fastify's reply hold it: the
 * route's (Nest sets `@HttpCode`'s before the interceptors run), or one the handler set itself.
 */
function statusOf(response: unknown, route: number): number {
  const current = (response as { statusCode?: unknown }).statusCode;
  return typeof current === "number" ? current : route;
}

/** 499 (nginx's "client closed request"): the client left while the route waited for its lock; nobody reads it. */
const CLIENT_CLOSED = 499;

/**
 * Registered globally by `RedlockModule`, for HTTP requests only:
 * - a route with `@LockedRoute` takes its lock here, after the guards, through core's HTTP policy,
 *   and runs the rest of the request holding it (`holdingLock`): a `@Locked` method the handler
 *   calls on the same resource re-enters the route's lock instead of contending with its request;
 * - a redlock-kit error thrown by the handler (a `@Locked` service method's `LockContentionError`,
 *   `LockUnavailableError`, …) becomes the Nest `HttpException` of its status (see `httpExceptionFor`),
 *   so that Nest's exception filters, yours included, handle it;
 * - the answer gets the headers that belong to it, set over those set before (`@Header()`): a
 *   redlock-kit error's (`Cache-Control: no-store`, a 423's `Retry-After`), a `LockedException`'s.
 */
@Injectable()
export class RedlockInterceptor implements NestInterceptor {
  constructor(
    @Inject(RedlockAppBinding) private readonly binding: RedlockAppBinding,
    @Inject(HttpAdapterHost) private readonly adapterHost: HttpAdapterHost,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> | Promise<Observable<unknown>> {
    // Nest runs the handler in the context handle() is called in: a request-scoped provider's
    // @Locked call there locks with this app's Redlock, no app having bound that instance
    return handlingWith(this.binding.redlock, () => this.#intercept(context, next));
  }

  #intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> | Promise<Observable<unknown>> {
    // not an HTTP request: errors are left as they are, as outside HTTP; that includes a call typed
    // "http" with no request and response (a custom transport's, through ExternalContextCreator),
    // whose @LockedRoute the route's own interceptor refuses with LockConfigurationError
    if (context.getType() !== "http" || !carriesHttp(context)) return next.handle();
    const http = context.switchToHttp();
    const response: unknown = http.getResponse();
    const translate = catchError((error: unknown) => throwError(() => this.#translate(error, response)));
    const handler = context.getHandler() as (...args: unknown[]) => unknown;
    const route = this.binding.routeFor(handler);
    if (route === null) return next.handle().pipe(translate);
    const request = http.getRequest<PlatformRequest>();
    const status = (Reflect.getMetadata(HTTP_CODE_METADATA, handler) as number | undefined) ?? HttpStatus.OK;
    return this.#lock(route, request, response).then((held) =>
      this.#holding(held.lock, () => {
        const answer = next.handle().pipe(map(this.#refuseLost(held, status, response)));
        // HEAD, @HttpCode(204): the body is dropped, its producer followed
        const sent = sendsNoBody(request.method, status)
          ? answer.pipe(concatMap((value) => afterDroppedBody(held, value)))
          : answer;
        return sent.pipe(translate);
      }),
    );
  }

  /**
   * A value the handler answers once its lock was lost (it ignored `lock.signal`) becomes the lock's
   * `LockLostError`, answered 409, rather than a success as if the critical section had run alone.
   * The answer's own error status stays (`@HttpCode(4xx)`, or one the handler set through
   * `@Res({ passthrough: true })`), and so does a stream whose headers are out.
   */
  #refuseLost(held: HeldRoute, status: number, response: unknown): (value: unknown) => unknown {
    return (value) => {
      const answered = statusOf(response, status);
      if (held.lostAnswer(answered) === undefined || this.adapterHost.httpAdapter.isHeadersSent(response)) return value;
      throw held.lostError();
    };
  }

  /**
   * `handle()` run holding the route's lock, as the other adapters run the rest of the request. The
   * pipes and the handler run when the Observable is subscribed, later and from elsewhere: Nest runs
   * them in the context `next.handle()` was called in, but subscribes to what the handler returned
   * (an `@Sse()` stream, an Observable) in the subscriber's. Both are done here, in the context that
   * holds the lock.
   */
  #holding(lock: Lock, handle: () => Observable<unknown>): Observable<unknown> {
    return holdingLock(this.binding.redlock, lock, () => {
      const handled = handle();
      const scope = new AsyncResource("RedlockRoute");
      return new Observable<unknown>((subscriber) => scope.runInAsyncScope(() => handled.subscribe(subscriber)));
    });
  }

  async #lock(route: RouteLock, request: PlatformRequest, response: unknown): Promise<HeldRoute> {
    const source: HttpKeySource = {
      params: request.params,
      // Express 5 parses the query string on every read of req.query: only when the key uses it
      query: route.readsQuery ? request.query : undefined,
      body: request.body,
      headers: request.headers,
    };
    // Fastify's reply wraps the Node response; Express's response is one
    const reply = response as { raw?: ServerResponse; readonly statusCode: number; send(payload: unknown): unknown };
    const raw = (reply.raw ?? response) as ServerResponse;
    // Fastify ends the response itself once it has cancelled a web body whose client left, while
    // the body's producer may still run: that end is not the handler's (the lock expires instead)
    let webBody = false;
    // An interceptor outside this one that subscribes again (rxjs retry(), an APP_INTERCEPTOR of the
    // root module) runs this again for the same request: once the earlier run's handler has settled
    // (it failed), it re-enters the lock the request holds instead of contending with it (423
    // against itself), and that run of the handler is followed too. An earlier run still at work in
    // its handler or its pipes (a timeout() before the retry gave up on it, and it goes on) must not
    // have another beside it: the run again contends (423), as before re-entering.
    const earlier = heldRouteOf(request);
    const previous = earlier !== undefined && !earlier.running && !awaitingHandler(earlier.lock) ? earlier : undefined;
    const outcome = await route.begin(
      source,
      raw,
      reply.raw === undefined ? undefined : () => !webBody,
      previous?.lock ?? null,
    );
    if (outcome.kind === "reentered") {
      // given only with the request's lock, taken here before
      const held = previous as HeldRoute;
      awaitHandler(held.lock, held);
      return held;
    }
    if (outcome.kind === "acquired") {
      request.lock = outcome.lock;
      markLocked(request, outcome.held);
      // Fastify's reply.send() is followed (a dropped body, a web body); Express's response
      // discards a HEAD or 204 body piped into it and ends with it: followed as it is
      if (reply.raw !== undefined) {
        followReplyPayloads(outcome.held, reply, request.method, () => {
          webBody = true;
        });
      }
      awaitHandler(outcome.lock, outcome.held);
      this.binding.followRoute(outcome.held);
      // a handler writing through @Res() answers past the interceptor: its response's first write decides
      guardLostAnswer(raw, outcome.held);
      return outcome.held;
    }
    if (outcome.kind === "aborted") throw new HttpException("Client Closed Request", CLIENT_CLOSED);
    throw this.#translate(outcome.error, response);
  }

  /**
   * The exception Nest's filters should see, with the headers that belong to it set on the response,
   * and without those describing the answer the route set up (its filters answer in its place).
   */
  #translate(error: unknown, response: unknown): unknown {
    const redlockError = RedlockError.isRedlockError(error);
    const exception = redlockError ? httpExceptionFor(error) : error;
    // a 423's LockedException carries the RedlockError's headers; one the app throws, its own
    const headers = exception instanceof LockedException ? exception.headers : redlockError ? error.headers : undefined;
    if (headers !== undefined && !this.adapterHost.httpAdapter.isHeadersSent(response)) {
      setErrorHeaders(response, headers);
    }
    return exception;
  }
}
