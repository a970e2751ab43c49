import { ErrorCodes, RedlockError } from "@redlock-kit/core";
import { type CliArgs, type Command, HELP, readArgs, UsageError } from "./args.js";
import type { Instances } from "./connect.js";
import { type CliIo, EXIT, type Verb } from "./io.js";

/**
 * Loaded once the command line is known to be good: ioredis and core cost more to load than
 * the rest of a `--help` or a usage error.
 */
const VERBS: Record<Command, () => Promise<Verb>> = {
  list: async () => (await import("./commands/list.js")).list,
  inspect: async () => (await import("./commands/inspect.js")).inspect,
  release: async () => (await import("./commands/release.js")).release,
  watch: async () => (await import("./commands/watch.js")).watch,
};

/**
 * Runs one `redlock-kit` command line and resolves to its exit code (0 found / done, 1 not held or
 * nothing found, 2 usage, 3 unavailable). Every connection it opened is closed when it resolves.
 *
 * @example
 * process.exitCode = await runCli(process.argv.slice(2), { ...process, env: process.env });
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let args: CliArgs;
  let instances: Instances;
  try {
    args = readArgs(argv, io.env);
    if (args.command === "help") {
      io.stdout.write(HELP);
      return EXIT.done;
    }
    const { connect } = await import("./connect.js");
    instances = await connect(args.urls, args.prefix, args.timeout, args.command === "watch");
  } catch (error) {
    return usage(io, error);
  }
  try {
    const verb = await VERBS[args.command]();
    return await verb(args, instances, io);
  } catch (error) {
    // A resource the core refuses (empty, longer than 1024 characters) is a usage error too, and
    // so are URLs that name one server twice (a host alias: its key would count twice).
    if (error instanceof UsageError || error instanceof TypeError || error instanceof RangeError) {
      return usage(io, error);
    }
    if (RedlockError.isRedlockError(error) && error.code === ErrorCodes.config) return usage(io, error);
    io.stderr.write(`redlock-kit: ${(error as Error).message}\n`);
    return EXIT.unavailable;
  } finally {
    instances.close();
  }
}

function usage(io: CliIo, error: unknown): number {
  io.stderr.write(`redlock-kit: ${(error as Error).message}\nRun "redlock-kit --help" for usage.\n`);
  return EXIT.usage;
}
