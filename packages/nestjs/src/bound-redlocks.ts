import { LockUnavailableError, type Redlock } from "@redlock-kit/core";

/**
 * Which Redlock a `@Locked` call uses: the one of the app its `this` belongs to. Decorators run
 * when a class is defined, long before any app exists, so the binding is made at each app's
 * start (every provider and controller instance of the app is bound to the app's Redlock) and
 * read at each call. Several apps in one process (end-to-end tests) each keep their own.
 */
const byInstance = new WeakMap<object, Redlock>();
/** The Redlocks of the RedlockModules that are running, in the order they were created. */
const running = new Set<Redlock>();
/**
 * The Redlocks of apps that shut down. Their instances stay bound to them: a job still running
 * during or after shutdown must get a typed error, never another running app's Redlock.
 */
const stopped = new WeakSet<Redlock>();

export function startRedlock(redlock: Redlock): void {
  stopped.delete(redlock);
  running.add(redlock);
}

export function stopRedlock(redlock: Redlock): void {
  running.delete(redlock);
  stopped.add(redlock);
}

export function bindInstance(instance: object, redlock: Redlock): void {
  byInstance.set(instance, redlock);
}

/**
 * The Redlock of `self`'s app (`LockUnavailableError`, 503, once that app shut down); for an
 * object no app created (a class instantiated by hand, a request-scoped provider), the one
 * running RedlockModule's.
 */
export function redlockOf(self: unknown): Redlock {
  const bound = typeof self === "object" && self !== null ? byInstance.get(self) : undefined;
  if (bound !== undefined && stopped.has(bound)) {
    throw new LockUnavailableError(
      [],
      [],
      "@Locked from @redlock-kit/nestjs was called on a provider of an app whose RedlockModule has shut down",
    );
  }
  if (bound !== undefined) return bound;
  const [only, ...others] = running;
  if (only !== undefined && others.length === 0) return only;
  throw new Error(
    only === undefined
      ? "@Locked from @redlock-kit/nestjs found no running RedlockModule: import RedlockModule.forRoot(...) in the app, or pass { redlock } to @Locked"
      : `@Locked from @redlock-kit/nestjs was called on an object of none of the ${running.size} running apps with a RedlockModule: pass { redlock } to @Locked`,
  );
}
