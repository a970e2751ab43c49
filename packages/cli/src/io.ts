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

export const EXIT = { done: 0, nothing: 1, usage: 2, unavailable: 3 } as const;

/** Fewer answers than a quorum: nothing can be said for sure. */
export const tooFew = (answered: number, instances: Instances) => answered < instances.dlm.quorum;
