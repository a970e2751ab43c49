import { types } from "node:util";

/**
 * What a `@Locked` method returned or resolved to, unless its work has not run yet and would run
 * only as the caller reads it, after the lock is released: a generator object (a generator method
 * wrapped by a plain function, or compiled for a target without generators of its kind, which the
 * check at decoration cannot see), ended without running any of its body; an Observable (cold, as
 * HttpService's are: its work runs when subscribed), never subscribed.
 */
export function refuseLazyResult(value: unknown, where: string): unknown {
  // a Proxy answering every name with a function (an RPC stub) is neither: its methods are not probed
  if (typeof value !== "object" || value === null || types.isProxy(value)) return value;
  if (isGenerator(value)) {
    try {
      Promise.resolve(value.return(undefined)).catch(() => {});
    } catch {
      // a compiler helper's return() that throws: the body has not run either way
    }
    throw new TypeError(
      `@Locked method ${where} returned a generator object: its body would run after the lock is released`,
    );
  }
  if (isObservable(value)) {
    throw new TypeError(
      `@Locked method ${where} returned an Observable: its work would run when it is subscribed, after the lock is released (return await lastValueFrom(...) instead)`,
    );
  }
  return value;
}

function isGenerator(value: object): value is Generator | AsyncGenerator {
  const kind = Object.prototype.toString.call(value);
  if (kind === "[object Generator]" || kind === "[object AsyncGenerator]") return true;
  // a compiler's helper (TypeScript's __asyncGenerator below ES2018, Babel's, SWC's) makes a plain
  // object with a generator's three methods and its iterator
  return (
    has(value, "next") &&
    has(value, "throw") &&
    has(value, "return") &&
    (has(value, Symbol.asyncIterator) || has(value, Symbol.iterator))
  );
}

/** RxJS's and the other libraries' interop mark: `subscribe`, and `Symbol.observable` or `"@@observable"`. */
function isObservable(value: object): boolean {
  const mark = (Symbol as { observable?: symbol }).observable;
  return has(value, "subscribe") && (has(value, "@@observable") || (mark !== undefined && has(value, mark)));
}

/** Whether `value[name]` is a function; a getter that throws is no method of one. */
function has(value: object, name: PropertyKey): boolean {
  try {
    return typeof (value as Record<PropertyKey, unknown>)[name] === "function";
  } catch {
    return false;
  }
}
