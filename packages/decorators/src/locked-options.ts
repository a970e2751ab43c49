import {
  checkDeclaredWith,
  DECLARED_LOCK_KEYS,
  type DeclaredLockOptions,
  type LockContentionError,
  type Redlock,
  resolveDeclaredLock,
  type UsingOptions,
} from "@redlock-kit/core";
import { checkRedlock } from "./default-redlock.js";

/** Options of one `@Locked` method. Every field is optional; `undefined` never overrides a default. */
export interface LockedOptions extends DeclaredLockOptions {
  /**
   * Lock ttl in ms. The lock is renewed while the method runs (up to `maxHoldMs`), so the ttl bounds
   * how long a crashed process blocks others, not how long the method may run.
   * @default 5000
   */
  ttl?: number;
  /**
   * How long to wait for a held lock, in ms, before rejecting with `LockContentionError`. `0` makes
   * one attempt.
   * @default 0
   */
  wait?: number;
  /**
   * The Redlock to lock with, or a function of the method's `this` that returns it at each call
   * (how `@redlock-kit/nestjs` finds the Redlock of the app an instance belongs to).
   * @default the one given to `setDefaultRedlock()`, read at each call
   */
  redlock?: Redlock | RedlockOf;
  /**
   * What a call does when another owner holds the lock (after `wait`): `"throw"` rejects with
   * `LockContentionError`; `"skip"` does not run the method and resolves to `undefined` (a
   * scheduled job that another process is already running); a function is called instead of the
   * method and the call resolves to what it returns.
   * @default "throw"
   */
  onContention?: "throw" | "skip" | OnContention;
}

/** Finds the Redlock of a call from the method's `this`. */
export type RedlockOf = (self: unknown) => Redlock;

/** Called instead of a `@Locked` method whose lock another owner holds; `method` names it for logs. */
export type OnContention = (error: LockContentionError, method: string) => unknown;

export interface ResolvedLockedOptions {
  readonly ttl: number;
  readonly redlock: Redlock | RedlockOf | undefined;
  readonly onContention: "throw" | "skip" | OnContention;
  /** What `Redlock.using()` is given: `wait` and the acquire/hold overrides that were set. */
  readonly using: Readonly<UsingOptions>;
}

const DEFAULTS = resolveDeclaredLock(undefined);
const DEFAULT_OPTIONS: ResolvedLockedOptions = Object.freeze({
  ttl: DEFAULTS.ttl,
  redlock: undefined,
  onContention: "throw",
  using: DEFAULTS.acquire,
});

const KNOWN = new Set<string>(["redlock", "onContention", ...DECLARED_LOCK_KEYS]);

/**
 * Resolves `@Locked`'s second argument (a ttl or an options object) once, at decoration, into a
 * frozen object; throws `TypeError`/`RangeError` naming the bad option.
 */
export function resolveLockedOptions(ttlOrOptions: number | LockedOptions | undefined): ResolvedLockedOptions {
  if (ttlOrOptions === undefined) return DEFAULT_OPTIONS;
  if (typeof ttlOrOptions === "number") {
    return Object.freeze({ ...DEFAULT_OPTIONS, ttl: resolveDeclaredLock({ ttl: ttlOrOptions }, "").ttl });
  }
  if (typeof ttlOrOptions !== "object" || ttlOrOptions === null || Array.isArray(ttlOrOptions)) {
    throw new TypeError("@Locked's second argument must be a ttl in ms or an options object");
  }
  for (const key of Object.keys(ttlOrOptions)) {
    if (!KNOWN.has(key)) {
      const hint = key === "retryCount" ? " (use wait: the total ms to keep trying)" : "";
      throw new TypeError(`options.${key} is not a @Locked option${hint}`);
    }
  }
  const own = <K extends keyof LockedOptions>(key: K): LockedOptions[K] =>
    Object.hasOwn(ttlOrOptions, key) ? ttlOrOptions[key] : undefined;
  const redlockOption = own("redlock");
  // only undefined means "not set": a null (a config value left null) is refused, as any option's
  const given = own("onContention");
  const onContention = given === undefined ? "throw" : given;
  if (onContention !== "throw" && onContention !== "skip" && typeof onContention !== "function") {
    throw new TypeError(`options.onContention must be "throw", "skip" or a function, got ${String(onContention)}`);
  }
  // core's own defaults and checks, now at decoration rather than on the first call
  const declared = resolveDeclaredLock(ttlOrOptions);
  const redlock =
    redlockOption === undefined || typeof redlockOption === "function"
      ? redlockOption
      : checkRedlock("options.redlock", redlockOption);
  if (redlock !== undefined && typeof redlock !== "function") checkDeclaredWith(redlock, declared, "options");
  return Object.freeze({
    ttl: declared.ttl,
    redlock,
    onContention,
    using: Object.freeze({ ...declared.acquire, ...declared.hold }),
  });
}
