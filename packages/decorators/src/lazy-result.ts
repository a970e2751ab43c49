import { types } from "node:util";

/**
 * What a `@Locked` method returned or resolved to, unless its work has not run yet and would run
 * only as the caller reads it, after the lock is released: a generator object (a generator method
 * wrapped by a plain function, or compiled for a target without generators of its kind, which the
 * check at decoration cannot see). Not started yet, it is ended without running any of its body.
 */
export function refuseLazyResult(value: unknown, where: string): unknown {
  if (!isGenerator(value)) return value;
  try {
    Promise.resolve(value.return(undefined)).catch(() => {});
  } catch {
    // a compiler helper's return() that throws: the body has not run either way
  }
  throw new TypeError(
    `@Locked method ${where} returned a generator object: its body would run after the lock is released`,
  );
}

function isGenerator(value: unknown): value is Generator | AsyncGenerator {
  if (typeof value !== "object" || value === null) return false;
  const kind = Object.prototype.toString.call(value);
  if (kind === "[object Generator]" || kind === "[object AsyncGenerator]") return true;
  // A compiler's helper (TypeScript's __asyncGenerator below ES2018, Babel's, SWC's) makes a plain
  // object with a generator's three methods and its iterator. A Proxy answering every name with a
  // function (an RPC stub) is not one: its methods are not probed.
  if (types.isProxy(value)) return false;
  try {
    const object = value as Record<PropertyKey, unknown>;
    return (
      typeof object.next === "function" &&
      typeof object.throw === "function" &&
      typeof object.return === "function" &&
      (typeof object[Symbol.asyncIterator] === "function" || typeof object[Symbol.iterator] === "function")
    );
  } catch {
    // a getter that throws: not a generator's
    return false;
  }
}
