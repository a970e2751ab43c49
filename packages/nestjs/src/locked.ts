import { Logger } from "@nestjs/common";
import {
  type LockedDecorator,
  type LockedKey,
  Locked as LockedMethod,
  type LockedOptions,
  type OnContention,
} from "@redlock-kit/decorators";
import { redlockOf } from "./bound-redlocks.js";

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
 * must run on one process at a time.
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
  if (typeof ttlOrOptions === "number") return LockedMethod(key, { ttl: ttlOrOptions, redlock: redlockOf });
  if (ttlOrOptions === undefined) return LockedMethod(key, { redlock: redlockOf });
  // anything else that is not an options object is refused by name in @redlock-kit/decorators
  if (typeof ttlOrOptions !== "object" || ttlOrOptions === null) return LockedMethod(key, ttlOrOptions);
  const { redlock = redlockOf, onContention, ...rest } = ttlOrOptions;
  return LockedMethod(key, {
    ...rest,
    redlock,
    ...(onContention === undefined ? {} : { onContention: onContention === "skip" ? skipAndLog : onContention }),
  });
}
