/**
 * A fixture process that stops itself with SIGSTOP inside its critical section (a GC pause, a
 * frozen VM), for the tests of a paused lock holder. Its config goes in argv[2] as JSON.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { sleep } from "./redis-process.js";

export interface StoppedChild {
  readonly pid: number;
  /** SIGCONT, then its exit code once it ends, and what it printed. */
  resume(): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** SIGKILL unless it already ended (call in `finally`). */
  kill(): Promise<void>;
}

/** Starts `script` and resolves once the kernel shows it stopped; rejects (and kills it) if it never stops. */
export async function startUntilStopped(script: string, config: unknown): Promise<StoppedChild> {
  const child = spawn(process.execPath, [script, JSON.stringify(config)], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGKILL");
    await exited;
  };
  const state = () => {
    try {
      return readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1]?.[0];
    } catch {
      return undefined; // already gone
    }
  };
  for (let i = 0; i < 500 && state() !== "T" && child.exitCode === null; i++) await sleep(20);
  if (state() !== "T") {
    await kill();
    throw new Error(`${script} never stopped itself: ${stderr}`);
  }
  return {
    pid: child.pid as number,
    async resume() {
      process.kill(child.pid as number, "SIGCONT");
      return { code: await exited, stdout, stderr };
    },
    kill,
  };
}
