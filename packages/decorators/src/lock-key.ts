import "reflect-metadata";
import { ownerName } from "./owner-name.js";

/** The reflect-metadata key under which `@LockKey()` records its parameter indices, on (prototype, method). */
export const LOCK_KEY_METADATA = "redlock-kit:lock-key";

/**
 * Marks a parameter whose value is appended to the `@Locked` key with `":"`, in parameter order.
 * A parameter decorator: it needs TypeScript's `experimentalDecorators` (standard ECMAScript
 * decorators have no parameter decorators). The value follows the template rules: a non-empty
 * string, a finite number, a boolean or a bigint, else the call rejects with `LockKeyError`.
 *
 * @example
 * class StockService {
 *   @Locked("stock") async reserve(@LockKey() sku: string, quantity: number) {} // locks "stock:<sku>"
 * }
 */
export function LockKey(): ParameterDecorator {
  return function lockKeyDecorator(target, propertyKey, parameterIndex) {
    if (typeof parameterIndex !== "number" || (typeof target !== "object" && typeof target !== "function")) {
      throw new TypeError(
        "@LockKey() is a parameter decorator: it needs TypeScript's experimentalDecorators (standard decorators have no parameter decorators)",
      );
    }
    if (propertyKey === undefined) {
      throw new TypeError("@LockKey() marks a parameter of a method decorated with @Locked, not of a constructor");
    }
    // The method as written (parameter decorators run before the method's own decorators replace
    // it): its `length` counts the parameters before the first with a default value or the rest
    // one. The key reads the argument passed, so a default would never be in it, and a rest
    // parameter's first value alone would be: an account left out of a batch's lock.
    const method: unknown = Object.getOwnPropertyDescriptor(target, propertyKey)?.value;
    if (typeof method === "function" && parameterIndex >= method.length) {
      throw new TypeError(
        `@LockKey() cannot mark parameter ${parameterIndex} of ${ownerName(target)}.${String(propertyKey)}: it is a rest parameter or has a default value (or follows one), and the key would hold a rest's first value alone, or the argument passed but never the default; name the values with a key function, @Locked((args) => [...])`,
      );
    }
    const marked = lockKeyParameters(target, propertyKey);
    const indices = [...new Set([...marked, parameterIndex])].sort((a, b) => a - b);
    Reflect.defineMetadata(LOCK_KEY_METADATA, Object.freeze(indices), target, propertyKey);
  };
}

/** The parameter indices marked with `@LockKey()` on this class's own method, in parameter order. */
export function lockKeyParameters(target: object, propertyKey: string | symbol): readonly number[] {
  const indices: unknown = Reflect.getOwnMetadata(LOCK_KEY_METADATA, target, propertyKey);
  return Array.isArray(indices) ? (indices as number[]) : [];
}
