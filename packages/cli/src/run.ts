import { type CliArgs, type Command, HELP, readArgs, UsageError } from "./args.js";
import { inspect } from "./commands/inspect.js";
import { list } from "./commands/list.js";
import { release } from "./commands/release.js";
import { watch } from "./commands/watch.js";
import { connect, type Instances } from "./connect.js";
import { type CliIo, EXIT, type Verb } from "./io.js";

const VERBS: Record<Command, Verb> = { list, inspect, release, watch };

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
    instances = connect(args.urls, args.prefix, args.timeout, args.command === "watch");
  } catch (error) {
    return usage(io, error);
  }
  try {
    return await VERBS[args.command](args, instances, io);
  } catch (error) {
    // A resource the core refuses (empty, longer than 1024 characters) is a usage error too.
    if (error instanceof UsageError || error instanceof TypeError || error instanceof RangeError) {
      return usage(io, error);
    }
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
