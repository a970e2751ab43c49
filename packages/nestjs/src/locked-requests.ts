import type { ExecutionContext } from "@nestjs/common";
import type { HeldRoute, Lock } from "@redlock-kit/core";

/**
 * Whether an "http" call carries an HTTP request and the platform's response (Express's, or
 * Fastify's reply over the Node one): a custom transport calling a handler through
 * `ExternalContextCreator` gets that type by default, with its own arguments (a message, none).
 */
export function carriesHttp(context: ExecutionContext): boolean {
  const http = context.switchToHttp();
  const request: unknown = http.getRequest();
  const response = http.getResponse<{ raw?: unknown } | undefined>();
  const node = (typeof response === "object" && response !== null ? (response.raw ?? response) : undefined) as
    | { on?: unknown; setHeader?: unknown }
    | undefined;
  return (
    typeof request === "object" &&
    request !== null &&
    typeof node?.on === "function" &&
    typeof node.setHeader === "function"
  );
}

/** Requests whose `@LockedRoute` lock `RedlockInterceptor` took, and its held route: what `@LockedRoute`'s own check looks for. */
const lockedRequests = new WeakMap<object, HeldRoute>();

/** `RedlockInterceptor` took the `@LockedRoute` lock of `request`, held as `held`. */
export function markLocked(request: object, held: HeldRoute): void {
  lockedRequests.set(request, held);
}

/** Whether `RedlockInterceptor` took the `@LockedRoute` lock of `request`. */
export const lockedByInterceptor = (request: object): boolean => lockedRequests.has(request);

/** The held route of the `@LockedRoute` lock `RedlockInterceptor` took for `request`, if any. */
export const heldRouteOf = (request: object): HeldRoute | undefined => lockedRequests.get(request);

/** The held route of each `@LockedRoute` lock whose handler has not been called yet. */
const unfollowed = new WeakMap<Lock, HeldRoute>();

/** `RedlockInterceptor` holds `lock` for a route whose handler it cannot see settle. */
export function awaitHandler(lock: Lock, held: HeldRoute): void {
  unfollowed.set(lock, held);
}

/**
 * Whether a run of the route holding `lock` has not called its handler yet: its pipes may still be
 * at work, and call it later even once the run was given up (a timeout() unsubscribed from it).
 */
export const awaitingHandler = (lock: Lock): boolean => unfollowed.has(lock);

/**
 * The held route whose handler this call is, once (a nested call to another `@LockedRoute`
 * method is not): the route lock is the innermost lock of the call's context.
 */
export function handlerOf(lock: Lock | undefined): HeldRoute | undefined {
  if (lock === undefined) return undefined;
  const held = unfollowed.get(lock);
  unfollowed.delete(lock);
  return held;
}
