import { checkResourceName, compileKey, type KeyResolver } from "@redlock-kit/core";

/**
 * What a `@Locked` method locks: a template over the argument list (`"order:{0}"`,
 * `"account:{0.accountId}"`), or a function of the argument list returning one resource name or
 * several (one lock over all of them).
 */
// biome-ignore lint/suspicious/noExplicitAny: lets a key function annotate its own argument types, e.g. ([from, to]: [string, string])
export type LockedKey = string | ((args: any) => string | readonly string[]);

/** The argument list of a call, which key templates and key functions read. */
export type LockedArgs = readonly unknown[];

/** Compiles `key` once; a malformed template or a key that is neither a string nor a function is a `TypeError`. */
export function compileLockedKey(key: LockedKey): KeyResolver<LockedArgs> {
  return compileKey<LockedArgs>(key);
}

/**
 * Appends the values of the `@LockKey()` parameters (`indices`) to every resource of `key`, joined
 * with ":": `"stock"` and a `@LockKey() sku` lock `"stock:<sku>"`. The values follow the template
 * rules, so a missing one is a `LockKeyError` naming its index.
 */
export function withKeyParameters(
  key: LockedKey,
  resolve: KeyResolver<LockedArgs>,
  indices: readonly number[],
): KeyResolver<LockedArgs> {
  if (indices.length === 0) return resolve;
  const suffix = indices.map((index) => `{${index}}`).join(":");
  if (typeof key === "string") return compileKey<LockedArgs>(`${key}:${suffix}`);
  const resolveSuffix = compileKey<LockedArgs>(suffix);
  return (args) => {
    const names = resolve(args);
    const tail = resolveSuffix(args)[0];
    // the names passed the key function's checks and the values the template's; the joined names
    // get only the checks of every name (length, reserved suffix): the function's guesses at a
    // missing value ("undefined", "NaN" written as a word) would refuse a value the caller sent
    return names.map((name) => checkResourceName(`${name}:${tail}`));
  };
}
