import { LockKeyError } from "../errors.js";
import type { Redlock } from "../redlock.js";
import {
  describeValue,
  isWellFormed,
  MAX_RESOURCE_LENGTH,
  MAX_RESOURCES,
  keysOf as prefixedKeys,
  reservedSuffix,
} from "../validate.js";
import { routeFences } from "./request-locks.js";

/** A function of the key source returning one resource name or several (a multi-resource lock). */
export type KeyFunction<S = unknown> = (source: S) => string | readonly string[];

/**
 * How a lock names its resources: a template such as `"order:{params.id}"` (placeholders are
 * dotted paths into the source; `{{` and `}}` are literal braces), or a function of the source.
 */
export type KeySpec<S = unknown> = string | KeyFunction<S>;

/** Turns a key source into the resources to lock, or throws `LockKeyError`. */
export type KeyResolver<S = unknown> = (source: S) => readonly string[];

type Part = { readonly text: string } | { readonly path: readonly string[]; readonly name: string };

const SEGMENT = /^[A-Za-z0-9_$-]+$/;
/** Fastify's wildcard param (`/files/*` sets `params["*"]`): the one name `*` is allowed in. */
const WILDCARD = "params.*";

/**
 * Compiles a key template or wraps a key function, once, at route or decorator definition.
 * A malformed template throws `TypeError` here; a value missing at resolution throws
 * `LockKeyError` (HTTP 400), never a lock on `"order:undefined"`.
 *
 * Values are escaped so that different values never make the same key: in every value, `%`, `{`,
 * `}` and the first character of each text that follows a placeholder become `%XX` (their UTF-8 bytes). With
 * `"t:{headers.x-tenant}:o:{params.id}"`, a tenant `"a:o:1"` gives `"t:a%3Ao%3A1:o:…"`, never the key
 * of tenant `"a"`. Two placeholders with no text between them are refused: nothing could tell
 * where one value ends.
 *
 * @example
 * const resolve = compileKey("order:{params.id}");
 * resolve({ params: { id: "42" } }); // ["order:42"]
 * compileKey("transfer:{0.from}")([{ from: "a" }]); // ["transfer:a"]
 */
export function compileKey<S = unknown>(spec: KeySpec<S>): KeyResolver<S> {
  if (typeof spec === "function") return (source) => fromFunction(spec, source);
  if (typeof spec !== "string" || spec.length === 0) {
    throw new TypeError("key must be a non-empty template string or a function");
  }
  if (!isWellFormed(spec)) throw new TypeError(`key template ${JSON.stringify(spec)} has a lone surrogate`);
  const parts = parseTemplate(spec);
  checkCanFit(spec, parts);
  const constant = constantOf(parts);
  if (constant !== undefined) {
    const keys = Object.freeze([constant]);
    return () => keys;
  }
  const escaped = escapedBy(spec, parts);
  return (source) => {
    let key = "";
    for (const part of parts) key += "text" in part ? part.text : escapeValue(scalarAt(source, part), escaped);
    return [checkResourceName(key)];
  };
}

/**
 * Refuses a template whose every key would be refused, whatever the values: its text and one
 * character per placeholder (a value is never empty) past the length cap, or a last text that ends
 * in a reserved suffix. Each request would otherwise answer 400.
 */
function checkCanFit(template: string, parts: readonly Part[]): void {
  let text = 0;
  for (const part of parts) if ("text" in part) text += part.text.length;
  const placeholders = parts.filter((part) => "path" in part).length;
  if (text + placeholders > MAX_RESOURCE_LENGTH) {
    const what = placeholders === 1 ? "placeholder" : "placeholders";
    throw new TypeError(
      `key template ${describeValue(template)} can only make keys longer than ${MAX_RESOURCE_LENGTH} characters (${text} characters of text and ${placeholders} ${what})`,
    );
  }
  const last = parts[parts.length - 1];
  const reserved = last !== undefined && "text" in last ? reservedSuffix(last.text) : undefined;
  if (reserved !== undefined) {
    throw new TypeError(
      `key template ${describeValue(template)} can only make keys that end in "${reserved}", the library's own keys beside each lock`,
    );
  }
}

/**
 * Refuses a template without placeholders that `redlock` could never lock: its `keyPrefix` makes it
 * one of the library's own keys (`"fence"` under `"job:redlock-kit:"`), or, fenced (`fencing`, the
 * declaration's own; undefined: the Redlock's), its fence counter cannot share its hash slot on a
 * Redis Cluster (`"account:{{}}1"`). Each request or call would fail the same way. Called where
 * the lock is declared, with compileKey's checks done; a placeholder's value decides for itself.
 * Throws a `TypeError` or `RangeError` naming the template.
 */
export function checkKeyWith(spec: KeySpec<never>, redlock: Redlock, fencing?: boolean): void {
  if (typeof spec !== "string") return;
  const constant = constantOf(parseTemplate(spec));
  if (constant === undefined) return;
  try {
    const keys = prefixedKeys(redlock.keyPrefix ?? "", [constant]);
    const fences = routeFences(redlock, fencing);
    for (const store of redlock.stores) store.checkKeys?.(keys, fences);
  } catch (error) {
    if (!(error instanceof Error)) throw error;
    const Kind = error instanceof RangeError ? RangeError : TypeError;
    throw new Kind(`key template ${describeValue(spec)} cannot be used with this Redlock: ${error.message}`, {
      cause: error,
    });
  }
}

/**
 * The Redis keys of resolved `resources` under `keyPrefix`, or a `LockKeyError` (400) when the
 * prefix makes one of them one of the library's own keys (`"fence"` under `"job:redlock-kit:"`):
 * what a request or an argument named, refused as any bad key is. A route and `@Locked` call it
 * before locking.
 */
export function checkPrefixedKeys(keyPrefix: string, resources: readonly string[]): readonly string[] {
  try {
    return prefixedKeys(keyPrefix, resources);
  } catch (error) {
    // the TypeError names the key, which may hold request data: it stays the cause
    const message =
      "Lock key ends in a suffix the library reserves for its own keys once the keyPrefix is put before it";
    throw new LockKeyError(message, undefined, { cause: error });
  }
}

/** The one key of a template without placeholders; undefined when it has one. */
function constantOf(parts: readonly Part[]): string | undefined {
  let key = "";
  for (const part of parts) {
    if (!("text" in part)) return undefined;
    key += part.text;
  }
  return key;
}

/**
 * The characters a value must not carry raw: `%` (the escape itself), `{` and `}` (a value must not
 * pick a Cluster hash slot) and every first character of the text after a placeholder (the end of a
 * value must be found where the text resumes). Refuses adjacent placeholders.
 */
function escapedBy(template: string, parts: readonly Part[]): RegExp {
  const chars = new Set(["%", "{", "}"]);
  parts.forEach((part, index) => {
    if ("text" in part) return;
    const next = parts[index + 1];
    if (next === undefined) return;
    if (!("text" in next)) {
      throw new TypeError(
        `key template ${JSON.stringify(template)} has {${part.name}} and {${next.name}} with nothing between them: put a separator such as ":" between placeholders`,
      );
    }
    chars.add(String.fromCodePoint(next.text.codePointAt(0) as number));
  });
  const set = [...chars].map((char) => char.replace(/[\\\]^-]/g, "\\$&")).join("");
  return new RegExp(`[${set}]`, "gu");
}

/** Percent-encodes the characters `escaped` matches; a value that has none is returned as is. */
function escapeValue(value: string, escaped: RegExp): string {
  escaped.lastIndex = 0;
  if (!escaped.test(value)) return value;
  return value.replace(escaped, percentEncode);
}

const percentEncode = (char: string): string =>
  Array.from(Buffer.from(char, "utf8"), (byte) => `%${byte.toString(16).toUpperCase().padStart(2, "0")}`).join("");

/**
 * Whether the key may read `root` (the first segment of a placeholder): `"order:{params.id}"`
 * reads `params` and nothing else. A key function may read anything.
 */
export function keyReads(spec: KeySpec<never>, root: string): boolean {
  if (typeof spec !== "string") return true;
  return parseTemplate(spec).some((part) => "path" in part && part.path[0] === root);
}

/**
 * Refuses a template that reads a header by a name with capitals: Node's requests and Fetch's
 * `Headers` name every header in lower case, so `{headers.X-Tenant}` would never resolve and each
 * request would answer 400. A key function may read anything.
 */
export function checkHeaderNames(spec: KeySpec<never>): void {
  if (typeof spec !== "string") return;
  for (const part of parseTemplate(spec)) {
    if (!("path" in part) || part.path[0] !== "headers") continue;
    const name = part.path[1];
    if (name === undefined || name === name.toLowerCase()) continue;
    throw new TypeError(
      `key template ${JSON.stringify(spec)} reads {${part.name}}: request header names are lower case, write {headers.${name.toLowerCase()}}`,
    );
  }
}

function parseTemplate(template: string): Part[] {
  const parts: Part[] = [];
  let text = "";
  for (let i = 0; i < template.length; i++) {
    const char = template[i];
    const following = template[i + 1];
    if ((char === "{" && following === "{") || (char === "}" && following === "}")) {
      text += char;
      i++;
    } else if (char === "{") {
      const end = template.indexOf("}", i);
      const name = end === -1 ? "" : template.slice(i + 1, end);
      const path = name.split(".");
      if (end === -1 || (name !== WILDCARD && !path.every((segment) => SEGMENT.test(segment)))) {
        throw new TypeError(
          `key template ${JSON.stringify(template)} has a malformed placeholder at ${i}: write {a.b.c}, and {{ or }} for a literal brace`,
        );
      }
      if (text) parts.push({ text });
      text = "";
      parts.push({ path, name });
      i = end;
    } else if (char === "}") {
      throw new TypeError(
        `key template ${JSON.stringify(template)} has an unmatched } at ${i}: write }} for a literal brace`,
      );
    } else {
      text += char;
    }
  }
  if (text) parts.push({ text });
  return parts;
}

/**
 * Walks own properties only: `{constructor.name}` finds nothing. `__proto__` is never read, even as
 * an own property (a query string `?__proto__=x` parsed into a prototype-less object, or JSON).
 */
function scalarAt(source: unknown, part: { path: readonly string[]; name: string }): string {
  let value: unknown = source;
  for (const segment of part.path) {
    if (typeof value !== "object" || value === null || segment === "__proto__") {
      throw new LockKeyError(`Lock key part "${part.name}" is missing`, part.name);
    }
    value = ownValue(value, segment, part.name);
  }
  // Fastify's wildcard string is the rest of the URL path by definition, so it gets the segment
  // rule joinedPath applies to Express's list. A named param's string does not: it may be an id
  // ("..", "a//b" from %2F) rather than a path, and refusing it would turn routes that answer today
  // into 400s.
  if (Array.isArray(value) && part.path[0] === "params") value = joinedPath(value, part.name);
  else if (part.name === WILDCARD && typeof value === "string" && value !== "") value = wholePath(value, part.name);
  switch (typeof value) {
    case "string":
      if (value.length > MAX_RESOURCE_LENGTH) {
        throw new LockKeyError(
          `Lock key part "${part.name}" is longer than ${MAX_RESOURCE_LENGTH} characters`,
          part.name,
        );
      }
      if (!isWellFormed(value)) {
        throw new LockKeyError(`Lock key part "${part.name}" is not well-formed Unicode`, part.name);
      }
      if (value.length > 0) return value;
      break;
    case "number":
      if (Number.isFinite(value)) return String(value);
      break;
    case "bigint":
    case "boolean":
      return String(value);
  }
  if (value === undefined || value === null || value === "") {
    throw new LockKeyError(`Lock key part "${part.name}" is missing`, part.name);
  }
  if (value instanceof Promise) {
    throw new LockKeyError(`Lock key part "${part.name}" is a promise: await it before the call`, part.name);
  }
  throw new LockKeyError(`Lock key part "${part.name}" must be a string or a number`, part.name);
}

/**
 * A wildcard route param as Express 5 gives it (`/files/*path` matching `/files/a/b/c`:
 * `["a", "b", "c"]`), joined into the path it came from, `"a/b/c"`: the string Koa, Fastify and
 * Hono give for that URL. Joining can only merge keys, never split one: `/files/a%2Fb/c`
 * (`["a/b", "c"]`) locks `"a/b/c"` too, and a coarser lock only adds exclusion, while escaping the
 * inner `/` would give one path, as a handler joins it, two keys. For the same reason empty, `.`
 * and `..` segments are refused: `a//b`, `a/./b` and `a/` name the path `a/b` or `a` would, under
 * another key. Other arrays (`?id=1&id=2`, a body's list) stay refused: which value is meant?
 */
function joinedPath(value: readonly unknown[], name: string): string {
  let segments: unknown[];
  try {
    // a copy, read once; one segment past what fits in a key is enough to find it too long
    segments = Array.prototype.slice.call(value, 0, MAX_RESOURCE_LENGTH + 1);
  } catch (error) {
    throw new LockKeyError(`Lock key part "${name}" could not be resolved`, name, { cause: error });
  }
  if (!segments.every((segment) => typeof segment === "string")) {
    throw new LockKeyError(`Lock key part "${name}" must be a string, a number or a list of path segments`, name);
  }
  const path = segments.join("/");
  return segments.length > 0 ? wholePath(path, name) : path;
}

/** `path`, refused if it has an empty, `.` or `..` segment (why: see `joinedPath`). */
function wholePath(path: string, name: string): string {
  if (DOT_OR_EMPTY_SEGMENT.test(path)) {
    throw new LockKeyError(`Lock key part "${name}" has an empty, "." or ".." path segment`, name);
  }
  return path;
}

const DOT_OR_EMPTY_SEGMENT = /(?:^|\/)\.{0,2}(?:\/|$)/;

/**
 * The own property `segment` of `object`, undefined when it has none. A getter or Proxy trap that
 * throws is a key that could not be resolved, as a key function's throw is (400, not 500).
 */
function ownValue(object: object, segment: string, name: string): unknown {
  try {
    return Object.hasOwn(object, segment) ? (object as Record<string, unknown>)[segment] : undefined;
  } catch (error) {
    // The error's own message may hold internal detail: keep it as the cause only.
    throw new LockKeyError(`Lock key part "${name}" could not be resolved`, name, { cause: error });
  }
}

/**
 * What a template literal writes for a value that is missing or not a number, as a word of its own:
 * between separators, `_` included (`${tenant}_${id}` writes "undefined_42").
 */
const MISSING_VALUE = /(?<![A-Za-z0-9])(?:undefined|NaN)(?![A-Za-z0-9])/;

function fromFunction<S>(fn: KeyFunction<S>, source: S): readonly string[] {
  let result: unknown;
  try {
    result = fn(source);
  } catch (error) {
    // The function's own message may hold internal detail: keep it as the cause only.
    throw new LockKeyError("Lock key could not be resolved", undefined, { cause: error });
  }
  let list: unknown[];
  try {
    list = keysOf(result);
  } catch (error) {
    if (error instanceof LockKeyError) throw error;
    // a `then` getter or a Proxy trap of the result that throws: as the function's own throw
    throw new LockKeyError("Lock key could not be resolved", undefined, { cause: error });
  }
  for (const key of list) {
    checkResourceName(key as string);
    if (!isWellFormed(key as string))
      throw new LockKeyError("Lock key function returned a name that is not well-formed Unicode");
    // `order:${id}` with id a promise (an await left out) or an object: every such call would share
    // the one lock on "order:[object Promise]"
    if ((key as string).includes("[object ")) {
      throw new LockKeyError(
        'Lock key function returned a name with "[object" in it: it turned an object into text (a promise not awaited?)',
      );
    }
    // `order:${body.id}` with no id, or `n:${Number(text)}` of text that is no number: every such
    // call would share the one lock on "order:undefined"
    if (MISSING_VALUE.test(key as string)) {
      throw new LockKeyError(
        'Lock key function returned a name with "undefined" or "NaN" in it: a value it read was missing',
      );
    }
  }
  return list as string[];
}

/** A key function's result as a list of non-empty strings, or a LockKeyError saying what is wrong. */
function keysOf(result: unknown): unknown[] {
  if (typeof (result as PromiseLike<unknown> | null)?.then === "function") {
    // Key functions are synchronous; a promise would be a lock on "[object Promise]". Observe its
    // rejection so that it cannot surface as an unhandled rejection.
    Promise.resolve(result).catch(() => {});
    throw new LockKeyError("Lock key function must return synchronously, not a promise");
  }
  // a copy (read once: a Proxy could answer differently later), none past the limit
  const list: unknown[] = Array.isArray(result) ? (result.length > MAX_RESOURCES ? [] : [...result]) : [result];
  if (list.length === 0 || list.length > MAX_RESOURCES || !list.every((r) => typeof r === "string" && r.length > 0)) {
    throw new LockKeyError("Lock key function must return a non-empty string or a non-empty array of them");
  }
  return list;
}

/**
 * The checks every resource name gets, whoever wrote it: the length cap and the suffixes the library
 * reserves for its own keys. A `LockKeyError` otherwise. Exported for names joined after resolution
 * (the decorators' `@LockKey()` values appended to a key function's names).
 */
export function checkResourceName(key: string): string {
  if (key.length > MAX_RESOURCE_LENGTH) {
    throw new LockKeyError(`Lock key is longer than ${MAX_RESOURCE_LENGTH} characters`);
  }
  if (reservedSuffix(key) !== undefined) {
    throw new LockKeyError("Lock key ends in a suffix the library reserves for its own keys");
  }
  return key;
}
