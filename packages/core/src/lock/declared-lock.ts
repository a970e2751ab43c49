import { type AcquireOptions, checkLockOptions, type HoldOptions } from "../options.js";
import type { Redlock } from "../redlock.js";

/** The options every declared lock (an HTTP route, a `@Locked` method) shares. */
export interface DeclaredLockOptions extends Omit<AcquireOptions, "signal" | "retryCount" | "wait">, HoldOptions {
  /**
   * Lock ttl in ms.
   * @default 5000
   */
  ttl?: number;
  /**
   * How long to wait for a held lock, in ms. `0` makes one attempt.
   * @default 0
   */
  wait?: number;
}

/** A declared lock's options, resolved once: frozen, defaults applied, every field checked. */
export interface ResolvedDeclaredLock {
  readonly ttl: number;
  /** What each acquisition is given: `wait` and the acquire options that were set. */
  readonly acquire: Readonly<AcquireOptions>;
  /** The hold options that were set (the Redlock's own fill the rest). */
  readonly hold: Readonly<HoldOptions>;
}

/** The options a declared lock hands to `Redlock.acquire()`/`using()` as they are. */
const ACQUIRE_KEYS = ["driftFactor", "retryDelay", "retryJitter", "instanceTimeout", "wait", "fencing"] as const;
const HOLD_KEYS = ["extendThreshold", "maxHoldMs"] as const;

/** The keys a declared lock takes; adapters add their own (`autoExtend`, `onLocked`, …). */
export const DECLARED_LOCK_KEYS: readonly string[] = Object.freeze(["ttl", ...ACQUIRE_KEYS, ...HOLD_KEYS]);

/**
 * Resolves the options of a declared lock once, when the route or method is declared: `ttl`
 * (default 5000), `wait` (default 0) and the acquire and hold options that were set, over `base`
 * (a policy's defaults) when given. `undefined` never overrides. Throws `TypeError`/`RangeError`
 * naming the bad option, with the messages of a call. The result is frozen: requests use it as it is.
 *
 * @example
 * const declared = resolveDeclaredLock({ ttl: 2000, wait: 500 }, "options");
 * await redlock.acquire(resources, declared.ttl, declared.acquire);
 */
export function resolveDeclaredLock(
  options: DeclaredLockOptions | undefined,
  name = "options",
  base?: ResolvedDeclaredLock,
): ResolvedDeclaredLock {
  const get = <K extends keyof DeclaredLockOptions>(key: K) =>
    options && Object.hasOwn(options, key) && options[key] !== undefined ? options[key] : undefined;
  const acquire: AcquireOptions = { wait: 0, ...base?.acquire };
  for (const key of ACQUIRE_KEYS) {
    const value = get(key);
    if (value !== undefined) (acquire as Record<string, unknown>)[key] = value;
  }
  const hold: HoldOptions = { ...base?.hold };
  for (const key of HOLD_KEYS) {
    const value = get(key);
    if (value !== undefined) hold[key] = value;
  }
  // only undefined means "not set": a null ttl is checked (and refused) as every other option's
  const own = get("ttl");
  const ttl = own !== undefined ? own : (base?.ttl ?? 5000);
  // the same checks and messages as a call, now at declaration rather than per request
  checkLockOptions({ ...acquire, ...hold, ttl }, name);
  return Object.freeze({ ttl, acquire: Object.freeze(acquire), hold: Object.freeze(hold) });
}

/**
 * Throws where a lock is declared (a route, a `@Locked` method) when `redlock` could never lock with
 * its options: the Redlock's `instanceTimeout` not shorter than the ttl, a ttl its drift uses up.
 * Each call would otherwise fail with the same error. The message names `name`.
 */
export function checkDeclaredWith(redlock: Redlock, declared: ResolvedDeclaredLock, name: string): void {
  // a Redlock of an older installed copy of core may not have it: its calls check as before
  if (typeof redlock.checkOptions !== "function") return;
  try {
    redlock.checkOptions(declared.ttl, declared.acquire);
  } catch (error) {
    if (!(error instanceof Error)) throw error;
    const Kind = error instanceof RangeError ? RangeError : TypeError;
    throw new Kind(`${name} cannot be used with this Redlock: ${error.message}`, { cause: error });
  }
}
