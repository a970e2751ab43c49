import { ErrorCodes, RedlockError } from "@redlock-kit/core";
import { type CliArgs, type Command, HELP, readArgs, UsageError } from "./args.js";
import type { Instances } from "./connect.js";
import { type CliIo, crashed, EXIT, type Verb } from "./io.js";

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
 * nothing found, 2 usage, 3 unavailable, 70 an unexpected error). Every connection it opened is
 * closed when it resolves.
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
    const { checkTarget, connect } = await import("./connect.js");
    await checkTarget(args.prefix, args.command === "inspect" || args.command === "release" ? args.target : undefined);
    instances = await connect(args.urls, args.prefix, args.timeout, args.command === "watch");
  } catch (error) {
    return failed(io, error);
  }
  try {
    const verb = await VERBS[args.command]();
    return await verb(args, instances, io);
  } catch (error) {
    return failed(io, error);
  } finally {
    instances.close();
  }
}

/**
 * Exit 2 for a command line that cannot run (URLs that name one server twice, whose key would count
 * twice, included); anything else was not expected.
 */
function failed(io: CliIo, error: unknown): number {
  const usage = error instanceof UsageError || (RedlockError.isRedlockError(error) && error.code === ErrorCodes.config);
  if (!usage) return crashed(io.stderr, error);
  io.stderr.write(`redlock-kit: ${(error as Error).message}\nRun "redlock-kit --help" for usage.\n`);
  return EXIT.usage;
}
