import { AsyncLocalStorage } from "node:async_hooks";
import { LockConfigurationError, type Redlock } from "@redlock-kit/core";

/**
 * Which Redlock a `@Locked` call uses: the one of the app its `this` belongs to. Decorators run
 * when a class is defined, long before any app exists, so the binding is made at each app's
 * start (every provider and controller instance of the app is bound to the app's Redlock) and
 * read at each call. Several apps in one process (end-to-end tests) each keep their own.
 */
const byInstance = new WeakMap<object, Redlock>();
/**
 * The Redlocks of the RedlockModules that are running, in the order they were created. An app's
 * instances stay bound to its Redlock once it shuts down: a job still running during or after the
 * shutdown gets that Redlock's refusal (`stopAcquiring()`, then `quit()`: `LockUnavailableError`),
 * never another running app's Redlock, and a nested call that only re-enters the locks its caller
 * holds still runs.
 */
const running = new Set<Redlock>();
/**
 * The Redlocks of the modules shutting down: taking no more locks, their clients not closed yet.
 * With none running, an object no app bound (a request-scoped provider of a request still in
 * flight) uses the one of these, and gets its refusal (503) as the app's other providers do.
 */
const stopping = new Set<Redlock>();

/**
 * The Redlock of the app whose module interceptor is handling the current call (an HTTP request, a
 * message, a WebSocket event): an object no app bound (a request-scoped provider, made per request)
 * used there belongs to that app, even while another app of the process runs or this one shuts down.
 */
const handling = new AsyncLocalStorage<Redlock>();

/** Runs `handle` as part of a call the app of `redlock` handles (see `handling`). */
export function handlingWith<T>(redlock: Redlock, handle: () => T): T {
  return handling.run(redlock, handle);
}

/** An app whose RedlockModule exists but has not run its onModuleInit yet. */
export interface StartingApp {
  /** Binds the instances the app has created so far to its Redlock. */
  bindInstances(): void;
}

/**
 * The apps whose RedlockModule was built and is not initialised yet. Nest runs the onModuleInit of
 * a module imported deeper, or listed before RedlockModule, first: a @Locked call made there binds
 * the app's instances then. Weak: an app whose start failed before its onModuleInit is not kept.
 */
const starting = new Set<WeakRef<StartingApp>>();

/**
 * The `@Locked` calls still running, per Redlock: at shutdown the module waits for them before it
 * closes the clients their locks are extended and released through.
 */
const inFlight = new Map<Redlock, Set<Promise<unknown>>>();

export function appStarting(app: StartingApp): void {
  starting.add(new WeakRef(app));
}

/** The app has run its onModuleInit (or will not run): its instances are bound, or never will be. */
export function appInitialised(app: StartingApp): void {
  for (const ref of starting) if (ref.deref() === app) starting.delete(ref);
}

export function startRedlock(redlock: Redlock): void {
  running.add(redlock);
}

export function stopRedlock(redlock: Redlock): void {
  if (running.delete(redlock)) stopping.add(redlock);
}

/** The module closed its Redlock: nothing unbound uses it any more. */
export function closedRedlock(redlock: Redlock): void {
  stopping.delete(redlock);
}

export function bindInstance(instance: object, redlock: Redlock): void {
  byInstance.set(instance, redlock);
}

/**
 * Follows a `@Locked` call made on `self` until it settles, under the Redlock it locks with (when
 * one can be told; a call that cannot tell rejects without locking). Returns what the caller gets:
 * a promise that settles as `call` does, so that a rejection nobody handles is still reported.
 */
export function followCall(self: unknown, call: Promise<unknown>): Promise<unknown> {
  let redlock: Redlock | undefined;
  try {
    redlock = redlockOf(self);
  } catch {
    return call;
  }
  let calls = inFlight.get(redlock);
  if (calls === undefined) {
    calls = new Set();
    inFlight.set(redlock, calls);
  }
  const followed = calls;
  followed.add(call);
  return call.finally(() => {
    followed.delete(call);
    if (followed.size === 0 && inFlight.get(redlock) === followed) inFlight.delete(redlock);
  });
}

/** Resolves once every `@Locked` call made so far through `redlock` has settled. */
export async function callsSettled(redlock: Redlock): Promise<void> {
  const calls = inFlight.get(redlock);
  if (calls !== undefined) await Promise.allSettled([...calls]);
}

/**
 * The Redlock of `self`'s app, even once that app shut down (its Redlock then refuses to acquire:
 * `LockUnavailableError`, 503); for an object no app bound (a request-scoped provider, a class
 * instantiated by hand), the one of the app handling the call it is made in, else the one running
 * RedlockModule's, or with none running, the one shutting down. Which app's cannot be told:
 * `LockConfigurationError` (a configuration to fix, answered 500 as such), never another app's.
 */
export function redlockOf(self: unknown): Redlock {
  const bound = typeof self === "object" && self !== null ? (byInstance.get(self) ?? bindStarting(self)) : undefined;
  if (bound !== undefined) return bound;
  const handler = handling.getStore();
  if (handler !== undefined) return handler;
  const apps = running.size > 0 ? running : stopping;
  const [only, ...others] = apps;
  if (only !== undefined && others.length === 0) return only;
  throw new LockConfigurationError(
    only === undefined
      ? "@Locked from @redlock-kit/nestjs found no running RedlockModule for this call: one made from a constructor comes before its app has the instance (make it in onModuleInit or later); else import RedlockModule.forRoot(...) in the app, or pass { redlock } to @Locked"
      : `@Locked from @redlock-kit/nestjs was called on an object of none of the ${apps.size} running apps with a RedlockModule, outside any call an app handles: pass { redlock } to @Locked`,
    [],
  );
}

/** The Redlock of `self`'s app when that app is still starting, its instances bound now. */
function bindStarting(self: object): Redlock | undefined {
  for (const ref of starting) {
    const app = ref.deref();
    if (app === undefined) starting.delete(ref);
    else app.bindInstances();
  }
  return byInstance.get(self);
}
