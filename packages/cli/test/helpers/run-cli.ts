import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The built binary: these tests run what `npm i -g @redlock-kit/cli` would put on PATH. */
export const BIN = fileURLToPath(new URL("../../dist/bin.js", import.meta.url));

export interface Run {
  readonly child: ChildProcess;
  /** Everything written so far (a TTY run merges stdout and stderr, as a terminal shows them). */
  stdout: string;
  stderr: string;
  /** Resolves with the exit code. */
  readonly exited: Promise<number>;
  /** Resolves once the output contains `text` `times` times. */
  waitFor(text: string, times?: number): Promise<void>;
}

/** The environment without a REDIS_URL of the machine running the tests, plus `env`. */
function environment(env: Record<string, string>): NodeJS.ProcessEnv {
  const { REDIS_URL: _, ...rest } = process.env;
  return { ...rest, ...env };
}

function watch(child: ChildProcess): Run {
  const waiting: { text: string; times: number; resolve: () => void }[] = [];
  const check = () => {
    for (const wait of [...waiting]) {
      if (run.stdout.split(wait.text).length - 1 >= wait.times) {
        waiting.splice(waiting.indexOf(wait), 1);
        wait.resolve();
      }
    }
  };
  const run: Run = {
    child,
    stdout: "",
    stderr: "",
    exited: new Promise((resolve) => child.once("close", (code) => resolve(code ?? -1))),
    waitFor: (text, times = 1) =>
      new Promise((resolve) => {
        waiting.push({ text, times, resolve });
        check();
      }),
  };
  child.stdout?.on("data", (chunk: Buffer) => {
    run.stdout += chunk.toString();
    check();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    run.stderr += chunk.toString();
  });
  return run;
}

/** Runs the binary with stdin, stdout and stderr as pipes (no terminal), stdin closed. */
export function start(args: readonly string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, [BIN, ...args], { env: environment(env), stdio: ["pipe", "pipe", "pipe"] });
  child.stdin?.end();
  return watch(child);
}

export async function runCli(args: readonly string[], env: Record<string, string> = {}) {
  const run = start(args, env);
  const code = await run.exited;
  return { code, stdout: run.stdout, stderr: run.stderr };
}

const quote = (arg: string) => `'${arg.replaceAll("'", `'\\''`)}'`;

/**
 * Runs the binary on a pseudo-terminal (`script`, from util-linux): stdin, stdout and stderr are a
 * TTY, and what is written to the returned child's stdin is typed on it (`\r` is Enter, `\x03`
 * Ctrl-C). `-e` passes the binary's exit code on. `script` runs the command through $SHELL, which
 * also gets the Ctrl-C: `exec` replaces that shell, so dash (CI's /bin/sh) cannot die of it with 130.
 */
export function startOnTty(args: readonly string[], env: Record<string, string> = {}): Run {
  const command = `exec ${[process.execPath, BIN, ...args].map(quote).join(" ")}`;
  const child = spawn("script", ["-qec", command, "/dev/null"], {
    env: environment(env),
    stdio: ["pipe", "pipe", "pipe"],
  });
  return watch(child);
}
