import type { Redlock } from "@redlock-kit/core";

let current: Redlock | undefined;

/**
 * Sets the Redlock that every `@Locked` method without its own `redlock` option locks with.
 * It is read when a decorated method is called, not when the class is defined, so it may be set
 * after the classes are imported (for example once the app's Redis clients are connected).
 * Pass `undefined` to clear it.
 *
 * @example
 * const dlm = new Redlock([new Redis(6379), new Redis(6380), new Redis(6381)]);
 * setDefaultRedlock(dlm);
 */
export function setDefaultRedlock(redlock: Redlock | undefined): void {
  if (redlock !== undefined) checkRedlock("redlock", redlock);
  current = redlock;
}

/** The Redlock given to `setDefaultRedlock()`, if any. */
export function defaultRedlock(): Redlock | undefined {
  return current;
}

/** Duck-typed rather than `instanceof`, so that a Redlock from another installed copy of core is accepted. */
export function checkRedlock(name: string, value: unknown): Redlock {
  const candidate = value as { using?: unknown; acquire?: unknown } | null;
  if (
    typeof candidate !== "object" ||
    candidate === null ||
    typeof candidate.using !== "function" ||
    typeof candidate.acquire !== "function"
  ) {
    throw new TypeError(`${name} must be a Redlock from @redlock-kit/core`);
  }
  return value as Redlock;
}
