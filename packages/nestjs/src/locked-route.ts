import "reflect-metadata";
import {
  applyDecorators,
  type CallHandler,
  createParamDecorator,
  type ExecutionContext,
  Logger,
  type NestInterceptor,
  SetMetadata,
  UseInterceptors,
} from "@nestjs/common";
import {
  compileKey,
  currentLock,
  type HttpKeySource,
  type KeySpec,
  type Lock,
  LockConfigurationError,
  LockLostError,
  type RouteLockOptions,
  trackHeldLocks,
} from "@redlock-kit/core";
import type { Observable } from "rxjs";
import { setErrorHeaders } from "./error-headers.js";
import { httpExceptionFor } from "./locked-exception.js";
import { carriesHttp, handlerOf, lockedByInterceptor } from "./locked-requests.js";

/** The reflect-metadata key under which `@LockedRoute` records its declaration, on the handler. */
export const LOCKED_ROUTE_METADATA = "redlock-kit:locked-route";

/**
 * Options of a `@LockedRoute`: `ttl` (5000), `wait` (0: 423 at once), `autoExtend` (true),
 * `maxHoldMs`, `extendThreshold`, `retryDelay`, `retryJitter`, `driftFactor`, `instanceTimeout`.
 * Custom 423/503 responses are written by an exception filter for `LockedException` and
 * `ServiceUnavailableException`, so core's `onLocked`/`onUnavailable` hooks are not here.
 */
export type LockedRouteOptions = Omit<RouteLockOptions, "onLocked" | "onUnavailable">;

export interface LockedRouteDeclaration {
  readonly key: KeySpec<HttpKeySource>;
  readonly options: LockedRouteOptions | undefined;
}

/**
 * Locks a controller route for the whole request: the key is resolved from the request's
 * `{ params, query, body, headers }`, the lock is taken after the guards and before the pipes and
 * the handler, renewed while the request is in flight, and released once the response has been
 * sent (a streamed one included), whatever the handler did. Contention answers 423 with
 * `Retry-After` (a `LockedException`), unavailable Redis 503, a key that cannot be resolved 400:
 * Nest `HttpException`s that exception filters can catch. The options are checked when the app
 * starts. Works on platform-express and platform-fastify.
 *
 * @example
 * @Post(":id/pay")
 * @LockedRoute("order:{params.id}", { ttl: 5000, wait: 2000 })
 * pay(@Param("id") id: string, @RequestLock() lock: Lock) {}
 */
export function LockedRoute(key: KeySpec<HttpKeySource>, options?: LockedRouteOptions): MethodDecorator {
  // a malformed template is a TypeError here, where the route is declared
  compileKey(key);
  const declaration: LockedRouteDeclaration = Object.freeze({ key, options });
  // the handler finds its route lock in its async context
  trackHeldLocks();
  // followed first: the metadata below goes on the wrapper Nest calls
  return applyDecorators(
    followHandler,
    SetMetadata(LOCKED_ROUTE_METADATA, declaration),
    UseInterceptors(LOCKED_ROUTE_CHECK),
  );
}

/**
 * Wraps the route's method so that its lock waits for what it returns to settle, not only for the
 * response: an interceptor inside `RedlockInterceptor` (a `timeout()` one) can answer while the
 * method still runs, and from then on nothing Nest passes on tells when it ends. A method that
 * returns an Observable is done with it: unsubscribing stops its work.
 */
function followHandler(target: object, name: string | symbol, descriptor: PropertyDescriptor): void {
  const method = descriptor.value as (...args: unknown[]) => unknown;
  // Nest reads one declaration per handler: a second one would be dropped without a word
  if (Reflect.hasOwnMetadata(LOCKED_ROUTE_METADATA, method)) {
    throw new TypeError(
      `@LockedRoute of ${target.constructor.name}.${String(name)}: one @LockedRoute per route; lock several resources with one key function returning an array`,
    );
  }
  const wrapper = {
    [method.name](this: unknown, ...args: unknown[]): unknown {
      const held = handlerOf(currentLock());
      // an interceptor answered while a pipe still ran: the response is done and the lock released
      if (held?.released) throw startedUnlocked(this, method, held.lock);
      const result = method.apply(this, args);
      return held === undefined ? result : held.follow(result);
    },
  }[method.name] as (...args: unknown[]) => unknown;
  // what the decorators below this one put on the method (Nest's route metadata among them)
  for (const key of Reflect.getOwnMetadataKeys(method)) {
    Reflect.defineMetadata(key, Reflect.getOwnMetadata(key, method), wrapper);
  }
  descriptor.value = wrapper;
}

const logger = new Logger("Redlock");

function startedUnlocked(target: unknown, method: { name: string }, lock: Lock): LockLostError {
  const where = `${(target as object | undefined)?.constructor.name}.${method.name}`;
  const error = new LockLostError(lock.resources, "The route's lock was released before its method started");
  logger.error(
    `${where} did not run: its response was sent (an interceptor answered while a pipe ran) and its lock released`,
  );
  return error;
}

/**
 * Runs after the global interceptors, on `@LockedRoute` routes only: a request that reaches it
 * without its lock was never seen by `RedlockInterceptor` (RedlockModule is not imported in this
 * app), and a call that is no HTTP request (a GraphQL resolver, a message or WebSocket handler)
 * is one it never locks. Either answers core's configuration error (over HTTP a 500 with a fixed
 * body; the message, for the operator, is logged) rather than run the handler unlocked.
 */
class LockedRouteCheck implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const type = context.getType();
    const http = type === "http" && carriesHttp(context);
    if (http && lockedByInterceptor(context.switchToHttp().getRequest<object>())) return next.handle();
    const where = `${context.getClass().name}.${context.getHandler().name}`;
    const runsIn = type === "http" ? "an http context without an HTTP request and response" : `a ${type} context`;
    const why = http
      ? "RedlockModule is not imported in this app"
      : `it runs in ${runsIn}, and @LockedRoute locks HTTP routes only (use @Locked)`;
    const error = new LockConfigurationError(`${where} is a @LockedRoute, but ${why}: the route cannot be locked`, []);
    logger.error(error.message);
    if (!http) throw error;
    // as the module's interceptor sets them
    setErrorHeaders(context.switchToHttp().getResponse(), error.headers);
    throw httpExceptionFor(error);
  }
}

const LOCKED_ROUTE_CHECK = new LockedRouteCheck();

/**
 * Injects the lock a `@LockedRoute` holds for this request (`undefined` on a route without one);
 * it is also on the platform's request object as `request.lock`, as in the other adapters.
 *
 * @example
 * @Post(":id/pay")
 * @LockedRoute("order:{params.id}")
 * pay(@RequestLock() lock: Lock) { return { until: lock.expiresAt }; }
 */
export const RequestLock = createParamDecorator(function requestLock(_data: unknown, context: ExecutionContext) {
  return context.switchToHttp().getRequest<{ lock?: Lock }>().lock;
});
