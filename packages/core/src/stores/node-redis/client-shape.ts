/**
 * node-redis (the `redis` package, v5 and v6) as core sees it: structural types of its own, so that
 * core neither imports `redis` at run time nor needs it installed to type-check, and one `send`
 * over the three shapes of `sendCommand` (client, Cluster, Sentinel).
 */
import type { ScriptArgs } from "../script-calls.js";

/**
 * A node-redis client (`createClient()`), Cluster (`createCluster()`) or Sentinel
 * (`createSentinel()`), connected or connecting. Only what redlock-kit calls is named here: any
 * installed copy of `redis` or `@redis/client` v5 or v6 fits.
 *
 * @example
 * import { createClient } from "redis";
 * const client = await createClient({ url: "redis://127.0.0.1:6379" }).connect();
 * const dlm = new Redlock([client]);
 */
export interface NodeRedisClientLike {
  /** True from `connect()` until `close()`/`destroy()`. */
  readonly isOpen: boolean;
  /** True while a connection is up and ready for commands. */
  readonly isReady: boolean;
  sendCommand(...args: never[]): Promise<unknown>;
  duplicate(...args: never[]): unknown;
}

/** Which of node-redis's three client shapes a value has. */
export type NodeRedisKind = "client" | "cluster" | "sentinel";

/** What core calls on every node-redis shape; `sendCommand` differs and goes through `send`. */
export interface NodeRedisBase {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  readonly options?: NodeRedisOptions;
  duplicate(overrides?: { socket?: NodeRedisSocketOptions }): NodeRedisBase;
  connect(): Promise<unknown>;
  SUBSCRIBE(channel: string, listener: (message: string, channel: string) => void): Promise<void>;
  UNSUBSCRIBE(channel: string): Promise<void>;
  destroy(): unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  once(event: string, listener: (...args: unknown[]) => void): unknown;
  off(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Standalone clients only: the socket no longer keeps the process alive. */
  unref?(): void;
}

/** The options a standalone client was created with (read for its description; never the password). */
interface NodeRedisOptions {
  readonly url?: string;
  readonly database?: number;
  readonly socket?: NodeRedisSocketOptions;
  readonly name?: string;
}

/** A standalone client's socket options, as far as core reads them (a duplicate is given a copy). */
interface NodeRedisSocketOptions {
  readonly host?: string;
  readonly port?: number;
  readonly path?: string;
  readonly reconnectStrategy?: false | number | ReconnectStrategy;
}

/** node-redis's `socket.reconnectStrategy` as a function: the delay before the next attempt, or give up. */
export type ReconnectStrategy = (retries: number, cause: Error) => number | false | Error;

/** Sends one command (strings only: numbers are turned into decimal strings by the caller) on any shape. */
export type Send = (firstKey: string | undefined, args: readonly string[]) => Promise<unknown>;

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null;

/**
 * The shape of a node-redis client, or undefined when `value` is not one. Called after the ioredis
 * check: ioredis clients also have `sendCommand` and `duplicate`, but no `isOpen`.
 */
export function nodeRedisKind(value: unknown): NodeRedisKind | undefined {
  if (!isObject(value) || typeof value.sendCommand !== "function" || typeof value.duplicate !== "function") {
    return undefined;
  }
  if (!("isOpen" in value) || typeof value.SUBSCRIBE !== "function" || isLegacyMode(value)) return undefined;
  if (typeof value.getSlotMaster === "function") return "cluster";
  if (typeof value.getMasterNode === "function") return "sentinel";
  return "client";
}

/**
 * A node-redis v4 client created with `legacyMode: true`: its `sendCommand` takes a callback and
 * returns nothing, though it has every member of a client. It sends the command all the same, so
 * an acquisition would set its keys while redlock-kit read no answer.
 */
export function isLegacyMode(value: Record<string, unknown>): boolean {
  return isObject(value.options) && value.options.legacyMode === true;
}

/** One `send` for the shape: a Cluster routes by the first key, a Sentinel to its master, in order. */
export function senderOf(client: NodeRedisBase, kind: NodeRedisKind): Send {
  const target = client as unknown as {
    sendCommand(...args: unknown[]): Promise<unknown>;
  };
  const options = ownOptions(client, kind);
  if (kind === "cluster") return (firstKey, args) => target.sendCommand(firstKey, false, args, options);
  if (kind === "sentinel") return oneAtATime((_, args) => target.sendCommand(false, args, options));
  return (_, args) => target.sendCommand(args, options);
}

/**
 * `send`, each command passed on once the one before it is answered. A node-redis Sentinel runs a
 * command on a master connection leased from its pool: one that finds the lease out (sent in the
 * same turn as another, or while a `use()` holds it) waits until every command on it is answered,
 * and the commands sent meanwhile overtake it: a give-back ran before the acquire it undid, whose
 * key then stayed set for its ttl with nobody's value. The cost: one command in flight per Sentinel
 * (64 concurrent lock+unlock loops on loopback: about 3,300/s, 20,600/s before).
 */
function oneAtATime(send: Send): Send {
  let last: Promise<unknown> = Promise.resolve();
  return (firstKey, args) => {
    const reply = last.then(() => send(firstKey, args));
    last = reply.catch(() => {});
    return reply;
  };
}

/**
 * A script call by SHA (EVALSHA), then sent whole (EVAL) once if Redis does not know it: the script
 * goes whole only after a restart or SCRIPT FLUSH, and on a Cluster once per node, as each node
 * loads it; not when `resend()` says the call is no longer wanted (sent again, it would run after
 * every command sent meanwhile: in-flight-acquires.ts); with `again()`'s arguments when given.
 * `args` are those after the SHA.
 */
export function callScript<T>(
  send: Send,
  sha: string,
  lua: string,
  args: ScriptArgs,
  parse: (reply: unknown) => T,
  resend?: () => boolean,
  again?: () => ScriptArgs,
): Promise<T> {
  const strings = args.map(String);
  const firstKey = args[0] > 0 ? strings[1] : undefined;
  return send(firstKey, ["EVALSHA", sha, ...strings]).then(parse, (error: unknown) => {
    if (!(error instanceof Error) || !error.message.includes("NOSCRIPT")) throw error;
    if (resend !== undefined && !resend()) throw error;
    return send(firstKey, ["EVAL", lua, ...(again === undefined ? strings : again().map(String))]).then(parse);
  });
}

/**
 * The command options redlock-kit sends with each command: none when the client's own would not
 * change its commands, else what undoes them (the cost of options on every command: the concurrent
 * node-redis rows of bench/ made 0.76x–0.84x of the floor with a type mapping against 0.82x–1.01x
 * without, two alternated runs of `pnpm bench --only=noderedis` each).
 */
function ownOptions(client: NodeRedisBase, kind: NodeRedisKind): NodeRedisCommandOptions | undefined {
  const { _commandOptions: own, _options: created } = client as unknown as {
    _commandOptions?: NodeRedisCommandOptions;
    /** A Cluster's options: `defaults` go to every node client, their command options too. */
    _options?: { defaults?: { commandOptions?: NodeRedisCommandOptions } };
  };
  const nodes = created?.defaults?.commandOptions;
  // kept where we cannot see (a Sentinel's nodeClientOptions are private): assumed set
  const unseen = own === undefined || kind === "sentinel";
  const options: NodeRedisCommandOptions = {
    ...(unseen || own.typeMapping !== undefined || nodes?.typeMapping !== undefined ? DEFAULT_TYPES : {}),
    ...(own?.asap === true || nodes?.asap === true ? IN_ORDER : {}),
    ...(unseen || own.abortSignal !== undefined || nodes?.abortSignal !== undefined ? UNABORTABLE : {}),
  };
  return Object.keys(options).length === 0 ? undefined : options;
}

/** The few node-redis command options core reads or sets. */
interface NodeRedisCommandOptions {
  readonly typeMapping?: unknown;
  readonly asap?: boolean;
  readonly abortSignal?: unknown;
}

/**
 * Replies in node-redis's default types (strings, numbers, arrays), whatever type mapping the
 * client was given (`commandOptions.typeMapping`, `withTypeMapping()`): mapped, a script's "OK"
 * read as a Buffer was a refusal that left the keys set, a 1 read as "1" a lost extension.
 */
const DEFAULT_TYPES = { typeMapping: {} };

/**
 * Each command behind those sent before it, whatever the client says (`commandOptions.asap`,
 * `asap()`): node-redis puts an asap command at the head of its write queue, so the commands of one
 * turn ran in reverse, a release behind the acquire sent after it (which found the key held).
 */
const IN_ORDER = { asap: false };

/**
 * No abort signal, whatever the client was given (`withAbortSignal()`, `commandOptions.abortSignal`):
 * node-redis merges the options of a call over the client's, so an undefined one replaces it. Once
 * that signal aborted (an app shutting down), every command was refused unsent: releases failed and
 * the keys stayed held until their ttl. redlock-kit bounds its commands itself (`instanceTimeout`,
 * a call's `signal`).
 */
const UNABORTABLE = { abortSignal: undefined };

/**
 * host:port/db (or the socket path) of a standalone client, never the password: the same form
 * as an ioredis client's, so that one server given once per client library is still caught.
 * A Cluster is "cluster", a Sentinel "sentinel".
 */
export function describeNodeRedis(client: NodeRedisBase, kind: NodeRedisKind): string {
  if (kind === "cluster") return "cluster";
  const options = client.options ?? {};
  // a Sentinel client does not say which master name it follows
  if (kind === "sentinel") return options.name === undefined ? "sentinel" : `sentinel:${options.name}`;
  let host = options.socket?.host;
  let port = options.socket?.port;
  let db = options.database;
  if (options.url !== undefined) {
    try {
      const url = new URL(options.url);
      host ??= url.hostname || undefined;
      port ??= url.port === "" ? undefined : Number(url.port);
      const path = url.pathname.slice(1);
      db ??= path === "" ? undefined : Number(path);
    } catch {
      // node-redis refuses such a URL itself when it connects
    }
  }
  const where = options.socket?.path ?? `${host ?? "localhost"}:${port ?? 6379}`;
  return `${where}/${db ?? 0}`;
}

/**
 * A reply the server sent as an error (node-redis's ErrorReply and its subclasses), as opposed to
 * a connection that closed or a client that is not open.
 */
export function isServerError(error: unknown): error is Error {
  if (!(error instanceof Error)) return false;
  let proto: object | null = Object.getPrototypeOf(error);
  while (proto !== null && proto !== Error.prototype) {
    if ((proto as { constructor?: { name?: string } }).constructor?.name === "ErrorReply") return true;
    proto = Object.getPrototypeOf(proto);
  }
  return false;
}
