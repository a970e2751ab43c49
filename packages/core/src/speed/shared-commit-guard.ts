import { ServerResponse } from "node:http";

/**
 * The lost-answer guard (http/lost-answer.ts) without a property per response, for speed only.
 *
 * What it buys: Express gives every request's response a new prototype (`Object.setPrototypeOf(res,
 * app.response)`), and V8 then builds a fresh hidden class for each property added to that object:
 * the guard's own `writeHead`, `write` and `end` cost about 2 µs each per request, and the churn of
 * classes and garbage more (some 13 µs of server CPU per locked request in a profile of the bench
 * row "HTTP: express route"). Instead, `http.ServerResponse.prototype` gets, once, a `writeHead`,
 * `write` and `end` that look the response up in a WeakMap: one that no route guards passes straight
 * to the methods that were there (one WeakMap miss per call); a guarded one decides at its first
 * call, as the own methods did, and is forgotten unless its answer was replaced.
 *
 * Why Node's prototype and not Express's `response`: a mounted sub-app (maybe from another copy of
 * Express) swaps the response's prototype after the guard; every one of them still ends at
 * `ServerResponse.prototype`. A response whose methods do not resolve to these (its own wrappers,
 * installed before the guard, as compression does; a prototype that overrides them) gets the own
 * methods instead, in front of whatever it has.
 */

/** What a guarded response asks at its commit point (http/lost-answer.ts's `CommitDecision`). */
export interface CommitGuard {
  /**
   * At the response's first `writeHead`, `write` or `end`, with its status (and a `writeHead` call's
   * arguments): true when its answer was replaced (sent through `writeHead` and `end`, the methods
   * below the guard).
   */
  decide(
    status: number,
    writeHead: ServerResponse["writeHead"],
    end: ServerResponse["end"],
    head?: ArrayLike<unknown>,
  ): boolean;
  /** What a `write` after a replaced answer does. */
  discardWrite(args: ArrayLike<unknown>): boolean;
  /** What an `end` after a replaced answer does. */
  discardEnd(res: ServerResponse, args: ArrayLike<unknown>): ServerResponse;
}

type Method = "writeHead" | "write" | "end";

const guards = new WeakMap<ServerResponse, CommitGuard>();
const shared = ServerResponse.prototype;
let below: ((name: Method) => (...args: never[]) => unknown) | undefined;

/** The method a call goes on to: the one `ServerResponse.prototype` had, else its parent's, read at each call. */
function methodBelow(name: Method): (...args: never[]) => unknown {
  return (below as NonNullable<typeof below>)(name);
}

function decideAt(res: ServerResponse, guard: CommitGuard, status: number, head?: ArrayLike<unknown>): boolean {
  const replaced = guard.decide(
    status,
    methodBelow("writeHead") as ServerResponse["writeHead"],
    methodBelow("end") as ServerResponse["end"],
    head,
  );
  // an intact answer needs nothing more: later calls pass through
  if (!replaced) guards.delete(res);
  return replaced;
}

function writeHead(this: ServerResponse, status: number): ServerResponse {
  const guard = guards.get(this);
  // biome-ignore lint/complexity/noArguments: the call's headers, read only if its answer is replaced
  if (guard !== undefined && decideAt(this, guard, status, arguments)) return this;
  // biome-ignore lint/complexity/noArguments: passes the call on as it came, with no array per call
  return Reflect.apply(methodBelow("writeHead"), this, arguments) as ServerResponse;
}

function write(this: ServerResponse): boolean {
  const guard = guards.get(this);
  // biome-ignore lint/complexity/noArguments: as above
  if (guard !== undefined && decideAt(this, guard, this.statusCode)) return guard.discardWrite(arguments);
  // biome-ignore lint/complexity/noArguments: as above
  return Reflect.apply(methodBelow("write"), this, arguments) as boolean;
}

function end(this: ServerResponse): ServerResponse {
  const guard = guards.get(this);
  // biome-ignore lint/complexity/noArguments: as above
  if (guard !== undefined && decideAt(this, guard, this.statusCode)) return guard.discardEnd(this, arguments);
  // biome-ignore lint/complexity/noArguments: as above
  return Reflect.apply(methodBelow("end"), this, arguments) as ServerResponse;
}

const METHODS = { writeHead, write, end } as const;

function install(): void {
  const parent = Object.getPrototypeOf(shared) as Record<Method, (...args: never[]) => unknown>;
  const own: Partial<Record<Method, (...args: never[]) => unknown>> = {};
  for (const name of Object.keys(METHODS) as Method[]) {
    if (Object.hasOwn(shared, name)) own[name] = shared[name] as (...args: never[]) => unknown;
    // listed (for…in) as the method it stands in front of is
    const was = Object.getOwnPropertyDescriptor(shared, name) ?? Object.getOwnPropertyDescriptor(parent, name);
    Object.defineProperty(shared, name, {
      value: METHODS[name],
      writable: true,
      configurable: true,
      enumerable: was?.enumerable ?? false,
    });
  }
  // a wrapper an instrumentation puts on OutgoingMessage later is still called
  below = (name) => own[name] ?? parent[name];
}

/**
 * Guards `res` through the shared methods (installed on the first call): false, and nothing done,
 * when its `writeHead`, `write` or `end` would not reach them, or it is guarded already (a route
 * nested in another of its request): the caller then puts its own methods on `res`.
 */
export function guardThroughPrototype(res: ServerResponse, guard: CommitGuard): boolean {
  if (below === undefined) install();
  if (res.writeHead !== writeHead || res.write !== write || res.end !== end || guards.has(res)) return false;
  guards.set(res, guard);
  return true;
}
