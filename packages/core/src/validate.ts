/** Node's timers overflow at 2^31 ms and fire at once, which would turn auto-extension into a storm. */
export const MAX_MS = 2 ** 31 - 1;
/** Longest resource name accepted; a longer one is almost certainly hostile input. */
export const MAX_RESOURCE_LENGTH = 1024;
/** Most resources in one lock. */
export const MAX_RESOURCES = 1000;

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return "a function";
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return String(value);
}

/** A positive integer of milliseconds below 2^31. */
export function checkMs(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0 || value > MAX_MS) {
    const problem = `${name} must be a positive integer of milliseconds below 2^31, got ${show(value)}`;
    throw typeof value === "number" ? new RangeError(problem) : new TypeError(problem);
  }
  return value;
}

/** A non-negative integer (a count or a delay that may be 0). */
export function checkNonNegativeInt(name: string, value: unknown, max = MAX_MS): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > max) {
    const problem = `${name} must be an integer from 0 to ${max}, got ${show(value)}`;
    throw typeof value === "number" ? new RangeError(problem) : new TypeError(problem);
  }
  return value;
}

/** A number in [min, max). */
export function checkRatio(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || Number.isNaN(value) || value < min || value >= max) {
    const problem = `${name} must be a number from ${min} up to (not including) ${max}, got ${show(value)}`;
    throw typeof value === "number" ? new RangeError(problem) : new TypeError(problem);
  }
  return value;
}

export function checkString(name: string, value: unknown): string {
  if (typeof value !== "string") throw new TypeError(`${name} must be a string, got ${show(value)}`);
  return value;
}

export function checkBoolean(name: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw new TypeError(`${name} must be a boolean, got ${show(value)}`);
  return value;
}

export function checkSignal(name: string, value: unknown): AbortSignal {
  if (!(value instanceof AbortSignal)) throw new TypeError(`${name} must be an AbortSignal, got ${show(value)}`);
  return value;
}

export function checkFunction<T extends (...args: never[]) => unknown>(name: string, value: unknown): T {
  if (typeof value !== "function") throw new TypeError(`${name} must be a function, got ${show(value)}`);
  return value as T;
}

/**
 * One resource name or a non-empty array of them, as a new frozen array: the caller may change
 * theirs after the call, the lock's keys must not. Duplicates are dropped so a lock never waits
 * for itself.
 */
export function checkResources(value: unknown): readonly string[] {
  checkCount(Array.isArray(value) ? value.length : 1);
  // each element read once, by index (not by an iterator of the caller's): a getter answering
  // something else on a second read would otherwise lock a name that was never checked
  const list: unknown[] = Array.isArray(value) ? Array.prototype.slice.call(value) : [value];
  checkCount(list.length);
  for (let i = 0; i < list.length; i++) checkResource(list[i]);
  return Object.freeze(list.length === 1 ? (list as string[]) : [...new Set(list as string[])]);
}

function checkCount(count: number): void {
  if (count === 0) throw new TypeError("resources must not be an empty array");
  if (count > MAX_RESOURCES) throw new RangeError(`resources must hold at most ${MAX_RESOURCES} names, got ${count}`);
}

/** The suffixes of the keys the library keeps beside a lock's (its queue, its fence counter): no resource may end with one. */
const RESERVED_SUFFIXES = [":redlock-kit:fence", ":redlock-kit:waiters"] as const;

/** The reserved suffix `name` ends with, if any. */
export function reservedSuffix(name: string): string | undefined {
  return RESERVED_SUFFIXES.find((suffix) => name.endsWith(suffix));
}

export function checkResource(value: unknown): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new TypeError(`resource must be a non-empty string, got ${show(value)}`);
  }
  if (value.length > MAX_RESOURCE_LENGTH) {
    throw new RangeError(`resource must be at most ${MAX_RESOURCE_LENGTH} characters, got ${value.length}`);
  }
  if (!isWellFormed(value)) {
    throw new TypeError(`resource must be well-formed Unicode, got a lone surrogate in ${show(value)}`);
  }
  const reserved = reservedSuffix(value);
  if (reserved !== undefined) {
    // a lock there would take, or a release delete, the fence counter or the queue of another lock
    throw new TypeError(`resource must not end in "${reserved}", the library's own keys beside each lock`);
  }
  return value;
}

/**
 * The Redis keys of checked resource `names` under a Redlock's `prefix`. A prefix may end a reserved
 * suffix that a name begins (`"job:redlock-kit:"` and `"fence"`, or `"lock:"` and
 * `"redlock-kit:fence"`): that key is the fence counter or the queue of a lock of a Redlock with a
 * shorter prefix, which a lock would take and a forced release delete. TypeError for such a name.
 */
export function keysOf(prefix: string, names: readonly string[]): readonly string[] {
  if (prefix === "") return names;
  return names.map((name) => {
    const key = prefix + name;
    const reserved = reservedSuffix(key);
    if (reserved !== undefined) {
      throw new TypeError(
        `resource ${show(name)} with keyPrefix ${show(prefix)} is the key ${show(key)}, which ends in "${reserved}", the library's own keys beside each lock`,
      );
    }
    return key;
  });
}

/**
 * False for a string with a lone UTF-16 surrogate. Redis receives UTF-8, where every lone surrogate
 * becomes the same U+FFFD: "\ud800" and "\udfff" would be one key, and one release channel.
 */
export function isWellFormed(value: string): boolean {
  // String.prototype.isWellFormed: Node 20+, not yet in the ES2023 lib this package compiles with
  return (value as string & { isWellFormed(): boolean }).isWellFormed();
}

export { show as describeValue };

/** A holder as `inspect()` shows it: the first 8 hex digits of the SHA-256 of its value. */
const FINGERPRINT = /^[0-9a-f]{8}$/;

function checkFingerprint(name: string, value: unknown, or = ""): string {
  if (typeof value !== "string" || !FINGERPRINT.test(value)) {
    const expected = "a holder as inspect() shows it (8 lowercase hex digits)";
    throw new TypeError(`${name} must be ${expected}${or}, got ${show(value)}`);
  }
  return value;
}

/**
 * `forceRelease()`'s `holder`: one fingerprint for every instance, or an array of one entry per
 * instance (`undefined`: nothing there may be deleted). Returns the entry of each instance.
 */
export function checkHolders(name: string, value: unknown, count: number): readonly (string | undefined)[] {
  if (!Array.isArray(value)) {
    return new Array<string>(count).fill(checkFingerprint(name, value, " or an array of one per instance"));
  }
  // read once, by index, as checkResources does: what is checked is what is compared
  const list: unknown[] = Array.prototype.slice.call(value);
  if (list.length !== count) {
    throw new RangeError(`${name} must have one entry per instance (${count}), got ${list.length}`);
  }
  const holders: (string | undefined)[] = [];
  for (let i = 0; i < count; i++) {
    holders.push(list[i] === undefined ? undefined : checkFingerprint(`${name}[${i}]`, list[i]));
  }
  return holders;
}
