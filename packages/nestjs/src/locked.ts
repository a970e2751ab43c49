import "reflect-metadata";
import { Logger } from "@nestjs/common";
import {
  type LockedDecorator,
  type LockedKey,
  Locked as LockedMethod,
  type LockedOptions,
  type OnContention,
} from "@redlock-kit/decorators";
import { followCall, redlockOf } from "./bound-redlocks.js";

const logger = new Logger("Redlock");

/** `onContention: "skip"` in a Nest app: the same, with a debug line saying which run was skipped. */
const skipAndLog: OnContention = (error, method) => {
  logger.debug(`${method} skipped: another owner holds ${error.resources.join(", ")}`);
  return undefined;
};

/**
 * `@Locked` of `@redlock-kit/decorators`, bound to the Redlock of the app's `RedlockModule`: the
 * method holds the lock while it runs (acquired before, renewed meanwhile, released in `finally`),
 * with the same key templates, `@LockKey()` parameters, options and re-entrancy. Other decorators'
 * metadata is kept, so it composes with `@Get()`, `@UseGuards()`, `@Cron()`, `@OnEvent()`…
 *
 * On contention the call rejects with `LockContentionError`, which the module answers with 423 and
 * `Retry-After` in an HTTP request. With `onContention: "skip"` the method does not run, the call
 * resolves to `undefined` and a debug line is logged: the right choice for a scheduled job that
 * must run on one process at a time. The app's shutdown waits for the calls still running before
 * it closes the clients their locks are renewed and released through.
 *
 * @param key a template over the arguments (`"order:{0}"`), or a function of the argument list
 * @param ttlOrOptions the ttl in ms (default 5000), or `LockedOptions` (`ttl`, `wait`, `onContention`…)
 *
 * @example
 * @Injectable()
 * class ReportJob {
 *   @Cron(CronExpression.EVERY_MINUTE)
 *   @Locked("report", { ttl: 30_000, onContention: "skip" })
 *   async close() {}
 * }
 */
export function Locked(key: LockedKey, ttlOrOptions?: number | LockedOptions): LockedDecorator {
  if (typeof ttlOrOptions === "number") return followed(LockedMethod(key, { ttl: ttlOrOptions, redlock: redlockOf }));
  if (ttlOrOptions === undefined) return followed(LockedMethod(key, { redlock: redlockOf }));
  // anything else that is not an options object is refused by name in @redlock-kit/decorators
  if (typeof ttlOrOptions !== "object" || ttlOrOptions === null) return LockedMethod(key, ttlOrOptions);
  const { redlock = redlockOf, onContention, ...rest } = ttlOrOptions;
  const decorator = LockedMethod(key, {
    ...rest,
    redlock,
    ...(onContention === undefined ? {} : { onContention: onContention === "skip" ? skipAndLog : onContention }),
  });
  // a Redlock of the user's own is not the module's to close: nothing to wait for at shutdown
  return redlock === redlockOf ? followed(decorator) : decorator;
}

type AnyMethod = (...args: unknown[]) => Promise<unknown>;

/**
 * `decorator`, with the method it installs followed while each call runs (`followCall`), in either
 * decorator mode. A Proxy keeps the name and length; the metadata on the method is copied over.
 */
function followed(decorator: LockedDecorator): LockedDecorator {
  const follow = (method: AnyMethod): AnyMethod => {
    const wrapper = new Proxy(method, {
      apply: (target, self: unknown, args: unknown[]) => followCall(self, Reflect.apply(target, self, args)),
    });
    for (const key of Reflect.getOwnMetadataKeys(method)) {
      Reflect.defineMetadata(key, Reflect.getOwnMetadata(key, method), wrapper);
    }
    return wrapper;
  };
  function followedDecorator(...args: unknown[]): unknown {
    const result = (decorator as unknown as (...args: unknown[]) => unknown)(...args);
    if (typeof result === "function") return follow(result as AnyMethod);
    const descriptor = result as PropertyDescriptor;
    descriptor.value = follow(descriptor.value as AnyMethod);
    return descriptor;
  }
  return followedDecorator as LockedDecorator;
}
