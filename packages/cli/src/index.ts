export { type CliArgs, HELP, readArgs, UsageError } from "./args.js";
export type { CliIo } from "./io.js";
export { runCli } from "./run.js";
