import {
  checkKeyWith,
  checkPrefixedKeys,
  checkReenteredFencing,
  ErrorCodes,
  holdingLock,
  type KeyResolver,
  type Lock,
  type LockContentionError,
  LockLostError,
  locksHolding,
  RedlockError,
  reenteringLocks,
  resourcesNotHeld,
  trackHeldLocks,
} from "@redlock-kit/core";
import { copyOwnMetadata } from "./copy-metadata.js";
import { checkRedlock, defaultRedlock } from "./default-redlock.js";
import { refuseLazyResult } from "./lazy-result.js";
import { lockKeyParameters } from "./lock-key.js";
import { type LockedOptions, type ResolvedLockedOptions, resolveLockedOptions } from "./locked-options.js";
import { compileLockedKey, type LockedArgs, type LockedKey, withKeyParameters } from "./method-key.js";
import { ownerName } from "./owner-name.js";

/**
 * The decorator `@Locked(...)` returns. It serves both decorator modes, told apart by the call
 * shape: standard ECMAScript `(method, context)` and TypeScript `experimentalDecorators`
 * `(target, propertyKey, descriptor)`. Either way the method keeps its name, `this` and type, and
 * must return a Promise (TypeScript refuses `@Locked` on a method typed otherwise).
 */
export interface LockedDecorator {
  <This, Args extends unknown[], Result extends Promise<unknown>>(
    method: (this: This, ...args: Args) => Result,
    context: ClassMethodDecoratorContext<This, (this: This, ...args: Args) => Result>,
  ): (this: This, ...args: Args) => Result;
  <Method extends (...args: never[]) => Promise<unknown>>(
    target: object,
    propertyKey: string | symbol,
    descriptor: TypedPropertyDescriptor<Method>,
  ): TypedPropertyDescriptor<Method>;
}

type AnyMethod = (...args: unknown[]) => unknown;

interface LockedCall {
  /** "OrderService.pay" (experimentalDecorators) or "pay" (standard decorators), for messages. */
  readonly where: string;
  readonly resolve: KeyResolver<LockedArgs>;
  readonly options: ResolvedLockedOptions;
}

/**
 * Locks the resources named by `key` around every call of the method: acquire before the body,
 * renew while it runs, release in `finally`. Rejects with `LockContentionError` (423) when another
 * owner holds them, `LockKeyError` (400) when an argument the key needs is missing (nothing is
 * locked), and `LockUnavailableError` (503) when no quorum answers. A call made while the same
 * async call chain already holds the resources through the same Redlock (an enclosing `@Locked`
 * call, or the route lock of the HTTP request being handled) runs without locking again.
 *
 * The key and options are checked here, once: a malformed template or a bad option is a
 * `TypeError`/`RangeError` when the class is defined.
 *
 * @param key a template over the arguments (`"order:{0}"`, `"account:{0.accountId}"`), or a
 *   function of the argument list returning one resource name or several
 * @param ttlOrOptions the ttl in ms (default 5000), or `LockedOptions`
 *
 * @example
 * class OrderService {
 *   @Locked("order:{0}", 5000) async pay(orderId: string) {}
 *   @Locked("account:{0.accountId}", { ttl: 5000, wait: 1000 }) async transfer(dto: Transfer) {}
 *   @Locked(([from, to]: [string, string]) => [`account:${from}`, `account:${to}`]) async move(from: string, to: string) {}
 * }
 */
export function Locked(key: LockedKey, ttlOrOptions?: number | LockedOptions): LockedDecorator {
  // from now on the HTTP adapters' route locks (and enclosing @Locked calls) count as held here
  trackHeldLocks();
  const resolve = compileLockedKey(key);
  const options = resolveLockedOptions(ttlOrOptions);

  function lockedDecorator(...decoratorArgs: unknown[]): unknown {
    const [first, second, third] = decoratorArgs;
    if (decoratorArgs.length === 2 && isDecoratorContext(second)) {
      const name = String(second.name);
      if (second.kind !== "method" || typeof first !== "function") {
        const article = second.kind === "accessor" ? "an" : "a";
        throw new TypeError(`@Locked decorates methods; ${name} is ${article} ${second.kind}`);
      }
      checkKeyOf(key, options);
      return lockedMethod(first as AnyMethod, { where: name, resolve, options });
    }
    if (
      (decoratorArgs.length === 2 || decoratorArgs.length === 3) &&
      (typeof first === "object" || typeof first === "function") &&
      first !== null &&
      (typeof second === "string" || typeof second === "symbol")
    ) {
      const where = `${ownerName(first)}.${String(second)}`;
      // experimentalDecorators gives a field (an arrow function's included) no descriptor
      if (third === undefined) throw new TypeError(`@Locked decorates methods; ${where} is a field`);
      if (typeof third !== "object" || third === null)
        throw new TypeError(`@Locked decorates methods; ${where} is not one`);
      const descriptor = third as PropertyDescriptor;
      if (typeof descriptor.value !== "function") {
        const what = descriptor.get || descriptor.set ? "an accessor" : "not a method";
        throw new TypeError(`@Locked decorates methods; ${where} is ${what}`);
      }
      const indices = lockKeyParameters(first, second);
      // a @LockKey() parameter appends a value to the key: a constant no longer
      if (indices.length === 0) checkKeyOf(key, options);
      const withParameters = withKeyParameters(key, resolve, indices);
      descriptor.value = lockedMethod(descriptor.value, { where, resolve: withParameters, options });
      return descriptor;
    }
    throw new TypeError(
      "@Locked decorates class methods, as a standard decorator (method, context) or with experimentalDecorators (target, key, descriptor)",
    );
  }
  return lockedDecorator as LockedDecorator;
}

/**
 * A constant key the `redlock` option could never lock (its `keyPrefix` makes it one of the
 * library's own keys; fenced, its counter has no home in its Cluster slot) is refused here rather
 * than at every call. A Redlock found per call (a function, the default) is checked by the call.
 */
function checkKeyOf(key: LockedKey, options: ResolvedLockedOptions): void {
  const { redlock } = options;
  if (redlock !== undefined && typeof redlock !== "function") checkKeyWith(key, redlock, options.using.fencing);
}

/**
 * A Proxy keeps the method's name, length and own properties; the metadata other decorators put
 * on the function object itself (reflect-metadata keys it by identity) is copied over.
 */
function lockedMethod(original: AnyMethod, call: LockedCall): AnyMethod {
  const kind = Object.prototype.toString.call(original);
  if (kind === "[object GeneratorFunction]" || kind === "[object AsyncGeneratorFunction]") {
    // the lock would be released as soon as the generator object is returned, before any item is produced
    throw new TypeError(`@Locked cannot decorate the generator method ${call.where}`);
  }
  const wrapper = new Proxy(original, {
    apply(target, thisArg: unknown, args: unknown[]) {
      return callLocked(target, thisArg, args, call);
    },
  });
  copyOwnMetadata(original, wrapper);
  return wrapper;
}

async function callLocked(original: AnyMethod, thisArg: unknown, args: unknown[], call: LockedCall): Promise<unknown> {
  const chosen = call.options.redlock ?? defaultRedlock();
  const redlock =
    typeof chosen === "function" ? checkRedlock(`the redlock option of ${call.where}`, chosen(thisArg)) : chosen;
  if (redlock === undefined) {
    throw new Error(
      `${call.where} is @Locked but has no Redlock: call setDefaultRedlock(dlm) at startup, or pass { redlock } to @Locked`,
    );
  }
  const resources = call.resolve(args);
  // a value its prefix makes one of the library's own keys: LockKeyError (400), as on a route
  if (redlock.keyPrefix) checkPrefixedKeys(redlock.keyPrefix, resources);
  // The enclosing locks this call runs under: one that started it without awaiting it may release them first.
  const enclosing = locksHolding(redlock, resources);
  // Partial overlap: an enclosing call keeps the resources it holds; only the others are locked here.
  // Read from the same locks: a validity read again could end in between, leaving a resource counted
  // as held but under no lock this call checks when it ends.
  const pending = resourcesNotHeld(redlock, resources, enclosing);
  // a method that fences would read no fence under an enclosing lock taken without: refused, its body not run
  checkReenteredFencing(redlock, call.options.using.fencing, enclosing, resources);
  // A thenable the method returns (a lazy query) is resolved inside the lock's context, where its
  // `then` runs: awaited outside, its work would not count as holding the lock.
  const body = () =>
    Promise.resolve(Reflect.apply(original, thisArg, args)).then((value) => refuseLazyResult(value, call.where));
  if (pending.length === 0) {
    // Re-entered: the body runs under the innermost enclosing lock that holds all its resources, not
    // under a lock on another resource taken in between, whose fence counts another resource's
    // acquisitions (a write with it could pass this resource's later fences): currentFence() is its own.
    // With none holding them all (its resources held by several enclosing locks), the innermost that
    // holds some: the innermost of the chain may be a lock on another resource entirely.
    const own =
      enclosing.findLast((lock) => resources.every((resource) => lock.resources.includes(resource))) ??
      enclosing.at(-1);
    // The call's own resources, when fewer than that lock's: currentFence() is its one resource's.
    const run = own === undefined ? body : () => holdingLock(redlock, own, body, resources);
    // released while the body runs (its caller did not await it), a lock it re-entered aborts its signal
    return checkHeld(enclosing, await reenteringLocks(enclosing, run));
  }
  let entered = false;
  const run = redlock.using(
    pending,
    call.options.ttl,
    async (_signal, lock) => {
      entered = true;
      // The caller's locks ended while this one was acquired (a call it did not await): never run without them.
      checkHeld(enclosing, undefined, "before the method started");
      return checkHeld([lock, ...enclosing], await reenteringLocks(enclosing, () => holdingLock(redlock, lock, body)));
    },
    call.options.using,
  );
  const onContention = call.options.onContention;
  if (onContention === "throw") return run;
  return run.catch((error: unknown) => {
    // only this call's own acquisition: a contention the method body ran into is the body's error
    if (entered || !RedlockError.isRedlockError(error) || error.code !== ErrorCodes.contention) throw error;
    return onContention === "skip" ? undefined : onContention(error as LockContentionError, call.where);
  });
}

/**
 * `result`, unless a lock the body ran under is no longer valid: an extension failed, maxHoldMs ran
 * out, or the enclosing call released it. The body may then have run without exclusivity, which its
 * caller must hear about rather than receive a result as if it had not.
 */
function checkHeld<T>(locks: readonly Lock[], result: T, when = "before the method finished"): T {
  const lost = locks.find((lock) => !lock.valid);
  if (lost === undefined) return result;
  // no method name in the message: with expose: true Koa and Fastify send it to the client
  const cause: unknown = lost.signal.reason;
  throw new LockLostError(lost.resources, `Lock was lost ${when}`, { cause });
}

function isDecoratorContext(value: unknown): value is { kind: string; name: string | symbol } {
  return typeof value === "object" && value !== null && typeof (value as { kind?: unknown }).kind === "string";
}
