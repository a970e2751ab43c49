/**
 * What a redis-server executed, as MONITOR reports it: each command with who sent it (a client's
 * address, or "lua" for a command a script ran). Tests use it to prove which path answered:
 * that a script really ran (and what it did inside), rather than a refusal made in the client.
 */
import { createHash } from "node:crypto";
import { once } from "node:events";
import { connect } from "node:net";
import type { Redis } from "ioredis";
import {
  ACQUIRE_SCRIPT,
  EXTEND_SCRIPT,
  FENCED_ACQUIRE_SCRIPT,
  RAISE_FENCES_SCRIPT,
  RELEASE_SCRIPT,
} from "../../packages/core/src/stores/scripts.js";
import type { Invariants } from "./invariants.js";
import type { RedisServer } from "./redis-servers.js";

export interface Executed {
  /** "lua" when a script ran the command, else the client's address. */
  readonly source: string;
  /** The command name (lower case) and its arguments. */
  readonly args: readonly string[];
  /** For a command a script ran: the EVAL or EVALSHA that ran it (MONITOR lists it just before). */
  readonly script?: Executed;
}

export interface Monitor {
  /** Everything executed since the monitor started, in the server's order. */
  readonly seen: Executed[];
  /** Resolves once every command the server executed before this call is in `seen`. */
  caughtUp(): Promise<void>;
  /** Closes the monitoring connection (a test tracks the monitor, or calls this once done). */
  close(): Promise<void>;
}

const sha1 = (text: string) => createHash("sha1").update(text).digest("hex");

/** The library's scripts by SHA1, the name Redis knows a script by. */
export const SCRIPT_SHAS = {
  acquire: sha1(ACQUIRE_SCRIPT),
  extend: sha1(EXTEND_SCRIPT),
  release: sha1(RELEASE_SCRIPT),
  "fenced-acquire": sha1(FENCED_ACQUIRE_SCRIPT),
  "raise-fences": sha1(RAISE_FENCES_SCRIPT),
} as const;

/** Undoes MONITOR's quoting of an argument (Redis's `sdscatrepr`: printable ASCII, the rest escaped). */
function unquote(arg: string): string {
  const escapes: Record<string, string> = { n: "\n", r: "\r", t: "\t", a: "\x07", b: "\b", "\\": "\\", '"': '"' };
  return arg.replace(/\\(x[0-9a-f]{2}|[nrtab\\"])/g, (_, code: string) =>
    code.startsWith("x") ? String.fromCharCode(Number.parseInt(code.slice(1), 16)) : (escapes[code] as string),
  );
}

/** One MONITOR line, `<time> [<db> <source>] "arg" "arg" …`: who sent it and its arguments, unquoted. */
function parseLine(line: string): { source: string; args: string[] } | undefined {
  const header = /^\S+ \[\d+ ([^\]]+)\] /.exec(line);
  if (header === null) return undefined;
  const args = [...line.slice(header[0].length).matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((match) =>
    unquote(match[1] ?? ""),
  );
  return { source: header[1] ?? "", args };
}

let marks = 0;

/**
 * Starts MONITOR on the server `client` talks to, through a plain socket of its own: ioredis's
 * `monitor()` switches to monitoring a turn after MONITOR's `OK`, so a line that arrives with the
 * `OK` (any other client's command) is taken for a reply and fails the connection ("Command queue
 * state error"). `caughtUp()` sends an ECHO through `client` and waits for MONITOR to report it:
 * Redis runs one command at a time, so everything executed before it has been reported by then.
 */
export async function startMonitor(client: Redis): Promise<Monitor> {
  const { host, port, path } = client.options;
  const socket = path ? connect(path) : connect(port ?? 6379, host ?? "127.0.0.1");
  socket.setEncoding("latin1");
  const seen: Executed[] = [];
  const waiting = new Map<string, () => void>();
  // scripts run atomically: the commands MONITOR reports from "lua" belong to the last script call
  let script: Executed | undefined;
  const report = (line: string) => {
    const parsed = parseLine(line);
    if (parsed === undefined) return;
    const [name = "", ...rest] = parsed.args;
    const command = name.toLowerCase();
    const mark = rest[0] ?? "";
    if (command === "echo" && waiting.has(mark)) {
      waiting.get(mark)?.();
      waiting.delete(mark);
      return;
    }
    const { source } = parsed;
    const executed: Executed =
      source === "lua" ? { source, args: [command, ...rest], script } : { source, args: [command, ...rest] };
    if (source !== "lua") script = command.startsWith("eval") || command.startsWith("fcall") ? executed : undefined;
    seen.push(executed);
  };
  // every reply on a monitoring connection is a simple string: `+OK`, then one line per command
  const started = new Promise<void>((resolve, reject) => {
    let buffered = "";
    let ok = false;
    socket.on("data", (chunk: string) => {
      const lines = (buffered + chunk).split("\r\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        if (ok) report(line.slice(1));
        else if (line === "+OK") {
          ok = true;
          resolve();
        } else reject(new Error(`MONITOR was refused: ${line}`));
      }
    });
    socket.once("error", reject);
  });
  socket.write("MONITOR\r\n");
  try {
    await started;
  } catch (error) {
    socket.destroy();
    throw error;
  }
  socket.on("error", () => {});
  return {
    seen,
    async caughtUp() {
      const mark = `monitor-mark-${process.pid}-${++marks}`;
      const reported = new Promise<void>((resolve) => waiting.set(mark, resolve));
      await client.echo(mark);
      await reported;
    },
    async close() {
      if (socket.destroyed) return;
      const closed = once(socket, "close");
      socket.destroy();
      await closed;
    },
  };
}

/** A monitor per server, each with a client of its own; both are closed after the test. */
export function startMonitors(
  servers: readonly RedisServer[],
  invariants: Pick<Invariants, "client" | "track">,
): Promise<Monitor[]> {
  return Promise.all(
    servers.map(async (server) => {
      const monitor = await startMonitor(invariants.client(server));
      invariants.track(monitor);
      return monitor;
    }),
  );
}

/**
 * Which lock step a top-level command was: a script's name ("acquire", "extend", "release", or
 * another SHA) for EVALSHA/EVAL; "acquire" for the one-key acquire without a script (SET ... NX ...
 * GET); otherwise undefined.
 */
export function scriptOf(executed: Executed): string | undefined {
  if (
    executed.source !== "lua" &&
    executed.args[0] === "set" &&
    executed.args.some((arg) => arg.toLowerCase() === "nx")
  ) {
    return "acquire";
  }
  const [command, body = ""] = executed.args;
  if (executed.source === "lua") return undefined;
  const sha = command === "evalsha" ? body : command === "eval" ? sha1(body) : undefined;
  if (sha === undefined) return undefined;
  const name = Object.entries(SCRIPT_SHAS).find(([, known]) => known === sha)?.[0];
  return name ?? sha;
}

/** The commands that scripts ran (MONITOR source "lua"), by name; only those run by `calls` when given. */
export const insideScripts = (seen: readonly Executed[], calls?: readonly Executed[]) =>
  seen
    .filter(
      (executed) => executed.source === "lua" && (calls === undefined || calls.includes(executed.script as Executed)),
    )
    .map((executed) => executed.args[0]);

/**
 * The connections (client addresses) that sent a command matching `ours`: how a test tells the
 * library's connections from any other client of the same server.
 */
export const connectionsOf = (seen: readonly Executed[], ours: (executed: Executed) => boolean) =>
  new Set(seen.filter((executed) => executed.source !== "lua" && ours(executed)).map((executed) => executed.source));

/** The commands clients sent themselves (not their scripts' commands) that carry `arg`, e.g. a lock value. */
export const sentByClientsWith = (seen: readonly Executed[], arg: string) =>
  seen.filter((executed) => executed.source !== "lua" && executed.args.includes(arg));

/** The lock steps (`scriptOf`) of the commands clients sent themselves that carry `arg` (a key), in order. */
export const stepsWith = (seen: readonly Executed[], arg: string) =>
  sentByClientsWith(seen, arg).flatMap((executed) => scriptOf(executed) ?? []);

/** The commands sent by the given connections, by name. */
export const sentBy = (seen: readonly Executed[], connections: ReadonlySet<string>) =>
  seen.filter((executed) => connections.has(executed.source)).map((executed) => executed.args[0]);
