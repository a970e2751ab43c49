import { AsyncResource } from "node:async_hooks";
import diagnosticsChannel, { type TracingChannel } from "node:diagnostics_channel";
import { ErrorCodes, RedlockError } from "../errors.js";
import type { LiveLocks } from "../lock/live-locks.js";
import { Lock, STATE } from "../lock/lock.js";
import { signalOf } from "../options.js";

/** What every redlock-kit trace context carries. Never the lock's value. */
export interface LockTraceContext {
  /** The resources the call names, without the key prefix. */
  readonly resources: readonly string[];
  /** How many instances the Redlock asks. */
  readonly instances: number;
  /** What happened; set before `asyncStart`/`asyncEnd` (and `error`), see each context. */
  outcome?: string;
  /** What the call threw or rejected with, as `tracePromise` reports it (on `error`, `asyncStart`, `asyncEnd`). */
  error?: unknown;
}

/** `redlock-kit:acquire`: one `lock()` or `acquire()` call, all its attempts included. */
export interface AcquireTraceContext extends LockTraceContext {
  readonly ttl: number;
  /** Attempts made so far (an attempt answered in-process behind a lock of this Redlock counts). */
  attempts: number;
  /** `error`: bad arguments or an unexpected failure. */
  outcome?: "acquired" | "contention" | "unavailable" | "aborted" | "error";
}

/** `redlock-kit:extend`: one `extend()` call (auto-extension calls it too). */
export interface ExtendTraceContext extends LockTraceContext {
  readonly ttl: number;
  /** `unavailable`: too few instances answered; the lock stays valid until its current validity ends. */
  outcome?: "extended" | "lost" | "unavailable" | "error";
  /**
   * `true` for an auto-extension of a lock taken while nobody subscribed to this channel (a
   * `using()` begun before the instrumentation): no call's context is its own, and a tracer should
   * give it no parent. It runs in the context core was loaded in, the process's top level unless
   * core was first imported inside a request's context.
   */
  readonly detached?: true;
}

/** `redlock-kit:release`: one `unlock()` / `lock.release()` call. */
export interface ReleaseTraceContext extends LockTraceContext {
  /** Milliseconds since the lock was acquired; absent when it had been released before. */
  readonly heldMs?: number;
  /**
   * `lost`: no quorum confirmed the release: a quorum no longer held it (it expired, was taken, or
   * an extension found it gone), or too few instances answered (the keys may stay until their ttl);
   * `released` for a lock given up (its signal aborted) whose keys a quorum still held;
   * `already-released`: nothing to do.
   */
  outcome?: "released" | "lost" | "already-released" | "error";
}

/** `redlock-kit:using`: one `using()` call, from the acquisition to the release after `fn`. */
export interface UsingTraceContext extends LockTraceContext {
  readonly ttl: number;
  /**
   * `completed`: `fn` ran and the lock was held throughout (`fn` may still have thrown: see
   * `error`); `lost`: the lock was lost while `fn` ran (its signal aborted, or no quorum confirmed
   * its release); the others are the acquisition's outcomes.
   */
  outcome?: "completed" | "lost" | "contention" | "unavailable" | "aborted" | "error";
}

/**
 * Tracing channels (`diagnostics_channel.tracingChannel`) for acquire, extend, release and using.
 * Each publishes `start` and `end` around the call, then `asyncStart` and `asyncEnd` when its
 * promise settles (`error` first when it rejects), with one context object throughout. The names
 * and context fields are a stable contract. Nothing is built when nobody subscribes.
 *
 * @example
 * import diagnosticsChannel from "node:diagnostics_channel";
 * diagnosticsChannel.tracingChannel("redlock-kit:acquire").subscribe({
 *   start(context) {},
 *   end(context) {},
 *   asyncStart(context) {},
 *   asyncEnd(context) { console.log(context.resources, context.outcome, context.attempts); },
 *   error(context) {},
 * });
 */
export const tracingChannels = {
  acquire: diagnosticsChannel.tracingChannel<unknown, AcquireTraceContext>("redlock-kit:acquire"),
  extend: diagnosticsChannel.tracingChannel<unknown, ExtendTraceContext>("redlock-kit:extend"),
  release: diagnosticsChannel.tracingChannel<unknown, ReleaseTraceContext>("redlock-kit:release"),
  using: diagnosticsChannel.tracingChannel<unknown, UsingTraceContext>("redlock-kit:using"),
} as const;

/**
 * The async context of the call that took a lock, for the extensions core makes later on its own
 * (auto-extension): the shared timer fires in the context core was loaded in
 * (speed/shared-timer.ts), and an extension run there would have no parent, or the parent of the
 * request that imported core. Kept only while someone traces extensions; run the extension with `inScope`.
 */
export function extensionScope(): AsyncResource | undefined {
  return tracingChannels.extend.hasSubscribers ? new AsyncResource("redlock-kit:extension") : undefined;
}

/** Set while a detached extension starts: `fn` calls `extend()` synchronously, which takes it. */
let detached = false;

export function inScope<T>(scope: AsyncResource | undefined, fn: () => T): T {
  if (scope !== undefined) return scope.runInAsyncScope(fn);
  if (!tracingChannels.extend.hasSubscribers) return fn();
  // A lock taken while nobody traced extensions (a `using()` begun before the instrumentation):
  // run where the timer fires, in the context core was loaded in (speed/shared-timer.ts). That is
  // the process's top level unless core was first imported inside a request, and Node offers no
  // empty context: its extension is marked `detached`, for a tracer to give it no parent.
  detached = true;
  try {
    return fn();
  } finally {
    detached = false;
  }
}

/**
 * `tracePromise`, except that the context gets an `outcome` instead of the result: a `Lock` in the
 * context would hand its value to every subscriber.
 */
function traced<C extends LockTraceContext, T>(
  channel: TracingChannel<unknown, C>,
  context: C,
  call: () => Promise<T>,
  outcome: (result: T | undefined, error: unknown, failed: boolean) => C["outcome"],
): Promise<T> {
  const { start, end, asyncStart, asyncEnd, error } = channel;
  const settle = (result: T | undefined, reason: unknown, failed: boolean) => {
    context.outcome = outcome(result, reason, failed);
    if (failed) {
      context.error = reason;
      error.publish(context);
    }
    asyncStart.publish(context);
    asyncEnd.publish(context);
  };
  return start.runStores(context, () => {
    try {
      return call().then(
        (result) => {
          settle(result, undefined, false);
          return result;
        },
        (reason: unknown) => {
          settle(undefined, reason, true);
          throw reason;
        },
      );
    } catch (reason) {
      // a synchronous throw: `error` and `end`, as tracePromise publishes it
      context.outcome = outcome(undefined, reason, true);
      context.error = reason;
      error.publish(context);
      throw reason;
    } finally {
      end.publish(context);
    }
  });
}

/** The outcome of a failed acquisition, from what it rejected with. */
function failedAcquisition(
  error: unknown,
  signal: AbortSignal | undefined,
): "contention" | "unavailable" | "aborted" | "error" {
  if (RedlockError.isRedlockError(error)) {
    if (error.code === ErrorCodes.contention) return "contention";
    if (error.code === ErrorCodes.unavailable) return "unavailable";
  }
  return signal?.aborted && error === signal.reason ? "aborted" : "error";
}

const namesOf = (resources: unknown): readonly string[] =>
  Array.isArray(resources) ? [...resources] : typeof resources === "string" ? [resources] : [];

const resourcesOf = (lock: unknown): readonly string[] => (lock instanceof Lock ? lock.resources : []);

/** The loop's attempt counter, given to `Redlock#acquire`. */
export interface AttemptCounter {
  attempts: number;
}

export function traceAcquire(
  resources: unknown,
  ttl: number,
  instances: number,
  options: unknown,
  call: (counter: AttemptCounter) => Promise<Lock | null>,
): Promise<Lock | null> {
  const context: AcquireTraceContext = { resources: namesOf(resources), instances, ttl, attempts: 0 };
  return traced(
    tracingChannels.acquire,
    context,
    () => call(context),
    (lock, error, failed) => {
      if (!failed) return lock === null ? "contention" : "acquired";
      return failedAcquisition(error, signalOf(options));
    },
  );
}

export function traceExtend(lock: Lock, ttl: number, instances: number, call: () => Promise<Lock>): Promise<Lock> {
  // taken by this extension alone: one a subscriber makes as its `start` is published is no renewal
  const renewal = detached;
  detached = false;
  const context: ExtendTraceContext = {
    resources: resourcesOf(lock),
    instances,
    ttl,
    ...(renewal && { detached: true as const }),
  };
  return traced(tracingChannels.extend, context, call, (_, error, failed) => {
    if (!failed) return "extended";
    if (RedlockError.isRedlockError(error)) {
      if (error.code === ErrorCodes.lost) return "lost";
      if (error.code === ErrorCodes.unavailable) return "unavailable";
    }
    return "error";
  });
}

export function traceRelease(
  lock: Lock,
  instances: number,
  live: LiveLocks,
  call: () => Promise<boolean>,
): Promise<boolean> {
  const known = lock instanceof Lock && lock[STATE] !== undefined;
  const released = known && lock[STATE].released;
  const heldMs = known ? live.heldMs(lock) : undefined;
  const context: ReleaseTraceContext = {
    resources: resourcesOf(lock),
    instances,
    ...(heldMs === undefined ? {} : { heldMs }),
  };
  return traced(tracingChannels.release, context, call, (done, _, failed) => {
    if (failed) return "error";
    if (released) return "already-released";
    return done ? "released" : "lost";
  });
}

export function traceUsing<T, F extends (signal: AbortSignal, lock: Lock) => T | Promise<T>>(
  resources: unknown,
  ttl: number,
  instances: number,
  fn: F,
  options: unknown,
  call: (fn: F) => Promise<T>,
): Promise<T> {
  const context: UsingTraceContext = { resources: namesOf(resources), instances, ttl };
  let held: Lock | undefined;
  // A non-function is passed on unwrapped, for using() to refuse with its usual TypeError.
  const observed =
    typeof fn === "function"
      ? (((signal: AbortSignal, lock: Lock) => {
          held = lock;
          return fn(signal, lock);
        }) as F)
      : fn;
  return traced(
    tracingChannels.using,
    context,
    () => call(observed),
    (_, error, failed) => {
      if (held === undefined) return failed ? failedAcquisition(error, signalOf(options)) : "error";
      // Lost before the release (its signal aborted then; a release while re-entered calls still ran
      // aborts it too, and is no loss). A loss nothing noticed while fn ran (no renewal came) shows at the release.
      return held[STATE].lost !== undefined || held[STATE].heldAtRelease === false ? "lost" : "completed";
    },
  );
}
