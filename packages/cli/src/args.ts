import { parseArgs } from "node:util";

export const COMMANDS = ["list", "inspect", "release", "watch"] as const;
export type Command = (typeof COMMANDS)[number];

/** What the command line asked for, checked. */
export interface CliArgs {
  readonly command: Command | "help";
  /** list/watch: the pattern; inspect/release: the resource. */
  readonly target: string | undefined;
  /** The instances' URLs, from --redis or REDIS_URL. */
  readonly urls: readonly string[];
  readonly prefix: string;
  readonly json: boolean;
  readonly timeout: number;
  readonly interval: number;
  readonly force: boolean;
  readonly yes: boolean;
}

/** A command line that cannot run: exit 2 with this message. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

export const HELP = `Usage: redlock-kit <command> [options]

Look at and clear redlock-kit locks on the Redis instances of a Redlock.

Commands:
  list [pattern]              the locks whose resource matches pattern (a Redis glob,
                              default *), found with SCAN (never KEYS), one row each
  inspect <resource>          one lock on every instance, and the quorum's verdict
  release --force <resource>  delete the lock's key on every instance, whoever holds it;
                              asks first unless --yes
  watch [pattern]             the list, refreshed every second until Ctrl-C

Options:
  --redis <url,url,...>  the instances, redis:// or rediss:// URLs (default: $REDIS_URL);
                         may be repeated; the URL of a Redis Cluster node stands for
                         the whole Cluster
  --prefix <prefix>      the Redlock's keyPrefix (default: none)
  --json                 print JSON (watch: one line per refresh)
  --timeout <ms>         longest wait for one instance's answer (default: 1000)
  --interval <ms>        watch: time between refreshes (default: 1000)
  --force                release: required. A holder that is still running goes on
                         without its lock while someone else may take it
  -y, --yes              release: do not ask (required when stdin is not a terminal)
  -h, --help             show this help

Exit codes:
  0  found / done
  1  not held / nothing found / nothing deleted
  2  usage: a bad command line, no instances, a key that is not a lock, or
     instances refusing the URLs (a password, an ACL user, a replica) too many to tell
  3  unavailable: too few instances answered to tell
  70   an unexpected error (a bug, or a failure nobody foresaw): no verdict
  130  interrupted by Ctrl-C (watch: 0; release's question: answered no)
  143  stopped by SIGTERM, as by Ctrl-C (watch: 0; release's question: answered no)

Examples:
  REDIS_URL=redis://a:6379,redis://b:6379,redis://c:6379 redlock-kit list 'order:*'
  redlock-kit inspect order:42 --redis redis://127.0.0.1:6379 --prefix lock:
  redlock-kit release --force order:42 --yes --json
`;

// String options are read as lists: parseArgs would keep the last of a repeated one without a word
const OPTIONS = {
  redis: { type: "string", multiple: true },
  prefix: { type: "string", multiple: true },
  json: { type: "boolean" },
  timeout: { type: "string", multiple: true },
  interval: { type: "string", multiple: true },
  force: { type: "boolean" },
  yes: { type: "boolean", short: "y" },
  help: { type: "boolean", short: "h" },
} as const;

/** Reads the command line (and REDIS_URL when --redis is absent); throws `UsageError` naming what is wrong. */
export function readArgs(argv: readonly string[], env: NodeJS.ProcessEnv): CliArgs {
  let parsed: ReturnType<typeof parseWith>;
  try {
    parsed = parseWith(argv);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values: lists, positionals } = parsed;
  // --redis may be repeated, its URLs added up; the others mean one value
  const values = {
    ...lists,
    redis: lists.redis?.join(","),
    prefix: once("--prefix", lists.prefix),
    timeout: once("--timeout", lists.timeout),
    interval: once("--interval", lists.interval),
  };
  const [verb, target, ...extra] = positionals;
  const base = {
    target: undefined,
    urls: [],
    prefix: values.prefix ?? "",
    json: values.json === true,
    timeout: 1000,
    interval: 1000,
    force: false,
    yes: false,
  };
  if (values.help || verb === undefined || verb === "help") return { ...base, command: "help" };
  if (!isCommand(verb)) {
    throw new UsageError(`unknown command ${JSON.stringify(verb)}: expected list, inspect, release or watch`);
  }
  if (extra.length > 0) throw new UsageError(`${verb} takes one argument, got also ${JSON.stringify(extra[0])}`);
  if ((verb === "inspect" || verb === "release") && target === undefined) {
    throw new UsageError(
      `${verb} needs a resource: redlock-kit ${verb}${verb === "release" ? " --force" : ""} <resource>`,
    );
  }
  onlyFor(verb, "release", values.force, "--force");
  onlyFor(verb, "release", values.yes, "--yes");
  onlyFor(verb, "watch", values.interval, "--interval");
  if (verb === "release" && !values.force) {
    throw new UsageError(
      "release deletes the lock whoever holds it: a holder that is still running goes on without it. Add --force to do it anyway",
    );
  }
  return {
    ...base,
    command: verb,
    target,
    urls: instanceUrls(values.redis, env),
    timeout: milliseconds("--timeout", values.timeout, base.timeout),
    interval: milliseconds("--interval", values.interval, base.interval),
    force: values.force === true,
    yes: values.yes === true,
  };
}

function parseWith(argv: readonly string[]) {
  return parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
}

function once(flag: string, values: readonly string[] | undefined): string | undefined {
  if (values !== undefined && values.length > 1) throw new UsageError(`${flag} is given more than once`);
  return values?.[0];
}

const isCommand = (value: string): value is Command => (COMMANDS as readonly string[]).includes(value);

function onlyFor(verb: Command, allowed: Command, value: unknown, flag: string): void {
  if (value !== undefined && verb !== allowed) throw new UsageError(`${flag} applies to ${allowed} only`);
}

function milliseconds(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const ms = Number(value);
  if (!/^\d+$/.test(value) || ms <= 0 || ms >= 2 ** 31) {
    throw new UsageError(`${flag} must be a positive whole number of milliseconds, got ${JSON.stringify(value)}`);
  }
  return ms;
}

/** The instances from --redis, else REDIS_URL; never echoes a URL, which may carry a password. */
function instanceUrls(flag: string | undefined, env: NodeJS.ProcessEnv): string[] {
  const source = flag ?? env.REDIS_URL;
  const from = flag === undefined ? "REDIS_URL" : "--redis";
  // read as the examples read REDIS_URL (DESIGN.md: the same list): a trailing comma is no instance
  const urls = (source ?? "")
    .split(",")
    .map((url) => url.trim())
    .filter((url) => url !== "");
  if (urls.length === 0) {
    throw new UsageError("no Redis instances: pass --redis redis://host:port[,redis://host:port...] or set REDIS_URL");
  }
  urls.forEach((url, index) => {
    if (!/^rediss?:\/\/./.test(url)) {
      throw new UsageError(`${from}: entry ${index + 1} is not a redis:// or rediss:// URL`);
    }
    // ioredis reads a database that is not a number as NaN, never selects it, and runs on db 0
    const db = databaseOf(url);
    if (db !== undefined && !/^\d+$/.test(db)) {
      throw new UsageError(`${from}: entry ${index + 1} names database ${JSON.stringify(db)}, not a number`);
    }
    // a URL without a port takes ioredis's from its query, which the URL parser does not check:
    // out of range, every command failed as for a server that is down (exit 3, an outage)
    const port = portOf(url);
    if (port !== undefined && !(/^\d+$/.test(port) && Number(port) < 65_536)) {
      throw new UsageError(`${from}: entry ${index + 1} names port ${JSON.stringify(port)}, not a port number`);
    }
    // ioredis would put it before every key but not in SCAN's pattern: list would find each lock
    // under the prefix and read it under the prefix twice, free, and show nothing
    if (queryOf(url)?.has("keyPrefix")) {
      throw new UsageError(
        `${from}: entry ${index + 1} sets keyPrefix: drop it, and pass it as --prefix (with the Redlock's keyPrefix after it)`,
      );
    }
    // ioredis takes a URL's query items as options, as strings, over the CLI's own: a string
    // connectTimeout threw outside any await (a crash, exit 1: "not held" to a script)
    const refused = Object.entries(NOT_FROM_URL).find(([option]) => queryOf(url)?.has(option));
    if (refused !== undefined) {
      throw new UsageError(`${from}: entry ${index + 1} sets ${refused[0]}, which ${refused[1]}: drop it`);
    }
  });
  return urls;
}

/** Client options a URL's query must not set, and why. */
const NOT_FROM_URL: Readonly<Record<string, string>> = {
  connectTimeout: "the CLI sets itself (--timeout)",
  maxRetriesPerRequest: "the CLI sets itself",
  retryStrategy: "the CLI sets itself",
  disconnectTimeout: "the CLI sets itself",
  reconnectOnError: "must be a function, not text",
};

/**
 * The database a URL names, as ioredis reads it: its path, else `?db=`, the last one when it is
 * repeated (ioredis keeps the last query item: checking the first let "?db=1&db=abc" run in db 0).
 */
function databaseOf(url: string): string | undefined {
  const parsed = parsedUrl(url);
  const path = parsed?.pathname.slice(1);
  return path === "" ? lastItem(parsed?.searchParams, "db") : path;
}

/** The port ioredis takes from a URL's query: where the URL names none, and no socket `?path=`. */
function portOf(url: string): string | undefined {
  const parsed = parsedUrl(url);
  if (parsed === undefined || parsed.port !== "" || parsed.searchParams.has("path")) return undefined;
  return lastItem(parsed.searchParams, "port");
}

/** The value ioredis takes for query item `name`: the last one given. */
const lastItem = (query: URLSearchParams | undefined, name: string) => query?.getAll(name).at(-1);

/** The options a URL's query string sets: ioredis takes each one as a client option. */
const queryOf = (url: string) => parsedUrl(url)?.searchParams;

function parsedUrl(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined; // connect() refuses it, with ioredis's message, which does not echo it
  }
}
