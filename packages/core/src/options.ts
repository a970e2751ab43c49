import {
  checkBoolean,
  checkMs,
  checkNonNegativeInt,
  checkRatio,
  checkSignal,
  checkString,
  describeValue,
  isWellFormed,
  MAX_MS,
} from "./validate.js";

/** Options of one lock attempt: given to the constructor as defaults, or per call. */
export interface AcquireOptions {
  /**
   * Clock drift allowance as a share of the ttl; validity = ttl − elapsed − (⌊ttl × driftFactor⌋ + 2 ms).
   * @default 0.01
   */
  driftFactor?: number;
  /**
   * Retries after the first attempt while others hold the lock (or instances are down). Ignored when `wait` is set.
   * @default 3
   */
  retryCount?: number;
  /**
   * Base delay between attempts, in ms.
   * @default 200
   */
  retryDelay?: number;
  /**
   * Random extra delay of 0 to `retryJitter` ms added to each retry, so that contenders do not retry in step.
   * @default 100
   */
  retryJitter?: number;
  /**
   * Total ms to keep trying. When set it replaces `retryCount`; `0` means a single attempt.
   * @default undefined (retryCount decides)
   */
  wait?: number;
  /**
   * Longest wait for one instance's answer, in ms; an instance slower than this counts as unavailable
   * for the attempt. Must be shorter than the ttl.
   * @default 10% of the ttl, at least 50 ms and at most 1000 ms (never more than half the ttl)
   */
  instanceTimeout?: number;
  /** Cancels waiting for the lock; the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Issue a fencing token with the lock: `lock.fence` (one resource) and `lock.fences` (per
   * resource), decimal strings strictly greater than the fence of every earlier acquisition of the
   * same resource, for the protected storage to check (docs/fencing.md). Costs a second round trip
   * per acquisition; needs persistent instances (appendonly) to keep that promise across restarts.
   * @default false
   */
  fencing?: boolean;
}

/** Options of auto-extension (`using()`, HTTP routes, `@Locked`). */
export interface HoldOptions {
  /**
   * Auto-extension renews the lock when less than this share of the ttl is left, and never later
   * than two per-instance timeouts before its validity ends (an extension may take that long after
   * a reconnect: one to learn which server the new connection reaches, one for the votes).
   * Scaled to the ttl, so a 300 ms lock is renewed about every 150 ms at the default.
   * @default 0.5
   */
  extendThreshold?: number;
  /**
   * Hard cap on how long auto-extension keeps a lock, in ms from acquisition. Past it the lock is
   * not extended again and its signal aborts when the validity ends, so a hung holder cannot keep
   * a resource forever.
   * @default 60000
   */
  maxHoldMs?: number;
}

/** Constructor options: defaults for every call. */
export interface RedlockOptions extends Omit<AcquireOptions, "signal">, HoldOptions {
  /**
   * Prefix put before every resource name to form the Redis key.
   * @default "" (keys are the resource names, as in other Redlock implementations)
   */
  keyPrefix?: string;
  /**
   * The clients Redlock creates from ioredis options or URLs connect at their first command (the
   * first lock, inspect…) rather than in the constructor, as with ioredis's own `lazyConnect`: a
   * Redlock that is never used opens no connection, and one built by a program whose start then
   * fails leaves nothing open. The first call waits for the connections (at most `instanceTimeout`;
   * an instance slower than that counts as unavailable for that attempt). ioredis options that set
   * `lazyConnect` themselves win; clients handed in are left as they are. Constructor only.
   * @default false
   */
  lazyConnect?: boolean;
  /**
   * Monotonic clock in ms used for validity arithmetic; meant for tests.
   * @default performance.now
   */
  clock?: () => number;
}

export interface ResolvedAcquireOptions {
  readonly driftFactor: number;
  readonly retryCount: number;
  readonly retryDelay: number;
  readonly retryJitter: number;
  readonly wait: number | undefined;
  readonly instanceTimeout: number | undefined;
  readonly signal: AbortSignal | undefined;
  readonly fencing: boolean;
}

export interface ResolvedHoldOptions {
  readonly extendThreshold: number;
  readonly maxHoldMs: number;
}

export const DEFAULT_ACQUIRE: ResolvedAcquireOptions = Object.freeze({
  driftFactor: 0.01,
  retryCount: 3,
  retryDelay: 200,
  retryJitter: 100,
  wait: undefined,
  instanceTimeout: undefined,
  signal: undefined,
  fencing: false,
});

export const DEFAULT_HOLD: ResolvedHoldOptions = Object.freeze({ extendThreshold: 0.5, maxHoldMs: 60_000 });

/** `options.ttl`, or just `ttl` when the value stands alone (name ""). */
const at = (name: string, key: string): string => (name === "" ? key : `${name}.${key}`);

/** Reads only own, defined properties, so `undefined` never overwrites a default and prototypes are never consulted. */
function own<T extends object>(options: T | undefined, key: keyof T): unknown {
  if (options === undefined || options === null) return undefined;
  return Object.hasOwn(options, key) ? options[key] : undefined;
}

/** The per-call signal, read as the options resolver does (own property only); undefined unless it is one. */
export function signalOf(options: unknown): AbortSignal | undefined {
  if (typeof options !== "object" || options === null || !Object.hasOwn(options, "signal")) return undefined;
  const signal = (options as { signal?: unknown }).signal;
  return signal instanceof AbortSignal ? signal : undefined;
}

export function checkOptionsObject(name: string, options: unknown): void {
  if (options !== undefined && (typeof options !== "object" || options === null || Array.isArray(options))) {
    throw new TypeError(`${name} must be an object`);
  }
}

const ACQUIRE_NAMES = [
  "driftFactor",
  "retryCount",
  "retryDelay",
  "retryJitter",
  "wait",
  "instanceTimeout",
  "signal",
  "fencing",
] as const;
const HOLD_NAMES = ["extendThreshold", "maxHoldMs"] as const;
/** Options only the constructor reads (`RedlockOptions` beyond the acquire and hold ones). */
const CONSTRUCTOR_ONLY: readonly string[] = ["keyPrefix", "lazyConnect", "clock"];

/** The option names each call reads (`checkOptionNames`); `redlock`: `new Redlock()`. */
export const OPTION_NAMES = Object.freeze({
  lock: new Set<string>(ACQUIRE_NAMES),
  using: new Set<string>([...ACQUIRE_NAMES, ...HOLD_NAMES]),
  redlock: new Set<string>([...ACQUIRE_NAMES, ...HOLD_NAMES, ...CONSTRUCTOR_ONLY]),
  inspect: new Set<string>(["instanceTimeout"]),
  forceRelease: new Set<string>(["instanceTimeout", "holder"]),
});

/**
 * Refuses an option `call` does not read, rather than ignore it: a misspelt `{ wiat: 2000 }` would
 * answer at once, and a call's `keyPrefix` (a constructor option) would lock the bare resource while
 * a Redlock built with that prefix holds the prefixed key, two holders of one lock. `undefined`
 * values pass, as they never override a default.
 */
export function checkOptionNames(options: unknown, known: ReadonlySet<string>, call: string, name = "options"): void {
  if (typeof options !== "object" || options === null) return;
  for (const key of Object.keys(options)) {
    // JSON.parse makes "__proto__" an own key: never read, as a prototype it would be no setting
    if (known.has(key) || key === "__proto__" || (options as Record<string, unknown>)[key] === undefined) continue;
    const hint = CONSTRUCTOR_ONLY.includes(key)
      ? ": it is a constructor option, give it to new Redlock()"
      : (HOLD_NAMES as readonly string[]).includes(key)
        ? ": it sets auto-extension, which using() does (and routes, @Locked)"
        : "";
    throw new TypeError(`${at(name, key)} is not an option of ${call}${hint}`);
  }
}

/** `using()`'s options as its acquisition takes them: without the hold options (the same object when it has none). */
export function acquirePart<T extends object>(options: T | undefined): T | undefined {
  if (options === undefined || !HOLD_NAMES.some((key) => Object.hasOwn(options, key))) return options;
  const part = { ...options } as Record<string, unknown>;
  for (const key of HOLD_NAMES) delete part[key];
  return part as T;
}

/** Merges `options` over `base`, validating every field that is set. Returns `base` itself when nothing is set. */
export function resolveAcquireOptions(
  base: ResolvedAcquireOptions,
  options: AcquireOptions | undefined,
  name = "options",
): ResolvedAcquireOptions {
  if (options === undefined) return base;
  checkOptionsObject(name, options);
  const driftFactor = own(options, "driftFactor");
  const retryCount = own(options, "retryCount");
  const retryDelay = own(options, "retryDelay");
  const retryJitter = own(options, "retryJitter");
  const wait = own(options, "wait");
  const instanceTimeout = own(options, "instanceTimeout");
  const signal = own(options, "signal");
  const fencing = own(options, "fencing");
  const resolved: ResolvedAcquireOptions = Object.freeze({
    driftFactor:
      driftFactor === undefined ? base.driftFactor : checkRatio(at(name, "driftFactor"), driftFactor, 0, 0.5),
    retryCount:
      retryCount === undefined ? base.retryCount : checkNonNegativeInt(at(name, "retryCount"), retryCount, 1e6),
    retryDelay: retryDelay === undefined ? base.retryDelay : checkNonNegativeInt(at(name, "retryDelay"), retryDelay),
    retryJitter:
      retryJitter === undefined ? base.retryJitter : checkNonNegativeInt(at(name, "retryJitter"), retryJitter),
    wait: wait === undefined ? base.wait : checkNonNegativeInt(at(name, "wait"), wait),
    instanceTimeout:
      instanceTimeout === undefined ? base.instanceTimeout : checkMs(at(name, "instanceTimeout"), instanceTimeout),
    signal: signal === undefined ? base.signal : checkSignal(at(name, "signal"), signal),
    fencing: fencing === undefined ? base.fencing : checkBoolean(at(name, "fencing"), fencing),
  });
  if (resolved.retryDelay === 0 && resolved.retryJitter === 0 && resolved.wait !== undefined && resolved.wait > 0) {
    // nothing between attempts: a held lock would be asked for as fast as Redis answers, for the whole wait
    throw new RangeError(
      `${at(name, "retryDelay")} and ${at(name, "retryJitter")} are both 0 with a wait of ${resolved.wait} ms: the attempts would follow each other without a pause; set retryDelay to at least 1`,
    );
  }
  const longestPause = resolved.retryDelay + resolved.retryJitter;
  if (longestPause > MAX_MS) {
    // a timer set past 2^31 - 1 ms fires after 1 ms: the retries would come at once, not after the pause
    throw new RangeError(
      `${at(name, "retryDelay")} + ${at(name, "retryJitter")} must be at most ${MAX_MS} ms, the longest a timer can wait, got ${resolved.retryDelay} + ${resolved.retryJitter}`,
    );
  }
  return resolved;
}

export function resolveHoldOptions(
  base: ResolvedHoldOptions,
  options: HoldOptions | undefined,
  name = "options",
): ResolvedHoldOptions {
  if (options === undefined) return base;
  checkOptionsObject(name, options);
  const extendThreshold = own(options, "extendThreshold");
  const maxHoldMs = own(options, "maxHoldMs");
  if (extendThreshold === undefined && maxHoldMs === undefined) return base;
  return Object.freeze({
    extendThreshold:
      extendThreshold === undefined
        ? base.extendThreshold
        : checkRatio(at(name, "extendThreshold"), extendThreshold, 0.05, 0.95),
    maxHoldMs: maxHoldMs === undefined ? base.maxHoldMs : checkMs(at(name, "maxHoldMs"), maxHoldMs),
  });
}

export function resolveLazyConnect(options: RedlockOptions | undefined): boolean {
  const lazy = own(options, "lazyConnect");
  return lazy === undefined ? false : checkBoolean("options.lazyConnect", lazy);
}

export function resolveKeyPrefix(options: RedlockOptions | undefined): string {
  const prefix = own(options, "keyPrefix");
  if (prefix === undefined) return "";
  const checked = checkString("options.keyPrefix", prefix);
  // as for a resource: Redis gets U+FFFD for every lone surrogate, so "\ud800" and "\udfff" would be
  // one prefix there (and two in a MemoryStore)
  if (!isWellFormed(checked)) {
    throw new TypeError(
      `options.keyPrefix must be well-formed Unicode, got a lone surrogate in ${describeValue(checked)}`,
    );
  }
  return checked;
}

/**
 * Validates a lock's options ahead of time (when a route or a decorated method is declared) with the
 * same checks and messages as a call: throws `TypeError`/`RangeError` naming the bad option.
 *
 * @example
 * checkLockOptions({ ttl: 5000, wait: 1000, maxHoldMs: 60_000 }); // ok
 * checkLockOptions({ ttl: 0.5 }); // RangeError: options.ttl must be a positive integer of milliseconds…
 */
export function checkLockOptions(
  options: (AcquireOptions & HoldOptions & { ttl?: number }) | undefined,
  name = "options",
): void {
  const acquire = resolveAcquireOptions(DEFAULT_ACQUIRE, options, name);
  resolveHoldOptions(DEFAULT_HOLD, options, name);
  const ttl = own(options, "ttl");
  if (ttl === undefined) return;
  instanceTimeoutFor(checkMs(at(name, "ttl"), ttl), acquire, name);
}

/**
 * The per-instance timeout for a ttl: the configured one (shorter than the ttl) or 10% of it.
 * Throws `RangeError` for a ttl that leaves an attempt no time: validity = ttl − elapsed − drift, and
 * after the drift less than the default per-instance timeout would be left for the answers. A
 * `ttl: 2` (drift 2 ms) or `{ ttl: 4, driftFactor: 0.49 }` would write to Redis and then answer 503.
 */
export function instanceTimeoutFor(
  ttl: number,
  options: Pick<ResolvedAcquireOptions, "instanceTimeout" | "driftFactor">,
  name = "",
): number {
  const configured = options.instanceTimeout;
  if (configured !== undefined && configured >= ttl) {
    throw new RangeError(
      `${at(name, "instanceTimeout")} must be shorter than the ttl, got ${configured} for a ttl of ${ttl}`,
    );
  }
  const standard = defaultInstanceTimeout(ttl);
  const drift = driftFor(ttl, options.driftFactor);
  if (ttl - drift <= standard) {
    throw new RangeError(
      `${at(name, "ttl")} of ${ttl} ms can never give a valid lock: after the clock drift allowance (${drift} ms at driftFactor ${options.driftFactor}) less than an attempt's ${standard} ms would be left; use a longer ttl`,
    );
  }
  return configured ?? standard;
}

function defaultInstanceTimeout(ttl: number): number {
  // A floor of 50 ms: below it a GC pause or a busy event loop reads as a dead instance.
  const tenth = Math.min(Math.max(Math.floor(ttl / 10), 50), 1000);
  return Math.max(1, Math.min(tenth, Math.floor(ttl / 2)));
}

/** ⌊ttl × driftFactor⌋ + 2 ms: Redis expires with 1 ms precision, plus 1 ms minimum drift. */
export function driftFor(ttl: number, driftFactor: number): number {
  return Math.floor(ttl * driftFactor) + 2;
}

export { MAX_MS };
