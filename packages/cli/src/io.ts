import type { CliArgs } from "./args.js";
import type { Instances } from "./connect.js";

/** Where a run reads and writes: the process's streams, or a test's. */
export interface CliIo {
  readonly stdin: NodeJS.ReadableStream & { readonly isTTY?: boolean };
  readonly stdout: NodeJS.WritableStream & { readonly isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /** Aborts on Ctrl-C: ends `watch` and answers "no" to a question. */
  readonly signal?: AbortSignal;
}

/** One verb: resolves to the exit code. */
export type Verb = (args: CliArgs, instances: Instances, io: CliIo) => Promise<number>;

export const EXIT = { done: 0, nothing: 1, usage: 2, unavailable: 3, crash: 70 } as const;

/**
 * An error nobody expected (a bug, a dependency's failure, output that cannot be written): one line
 * on stderr, and exit 70 (sysexits' EX_SOFTWARE), which no outcome uses. Node's own exit 1 for it
 * reads as "not held" or "nothing found" to a script.
 */
export function crashed(stderr: NodeJS.WritableStream, error: unknown): number {
  const { name, message } = error instanceof Error ? error : new Error(String(error));
  try {
    stderr.write(`redlock-kit: unexpected error, no verdict: ${name}: ${message.replace(/\s*\n\s*/g, " ")}\n`);
  } catch {
    // a stderr that cannot be written to either: the exit code still says it
  }
  return EXIT.crash;
}

/** Fewer answers than a quorum: nothing can be said for sure. */
export const tooFew = (answered: number, instances: Instances) => answered < instances.dlm.quorum;
