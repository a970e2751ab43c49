#!/usr/bin/env node
import { getEventListeners } from "node:events";
import { crashed } from "./io.js";
import { runCli } from "./run.js";

// An error nobody expected, wherever it is thrown: Node's exit 1 with a stack trace would read as
// "not held" or "nothing found" to a script
process.on("uncaughtException", (error) => process.exit(crashed(process.stderr, error)));

// The first Ctrl-C ends `watch` (or answers a question) cleanly; a second one kills as usual. A
// Ctrl-C that nothing listens for (list, inspect, a release under way) kills at once: swallowed,
// it left the run waiting --timeout for each slow instance, again and again. SIGTERM, which a
// process manager sends to stop a `watch` (systemd, `docker stop`, Kubernetes), does the same:
// unheard, it killed `watch` by the signal (and Node as a container's PID 1 ignored it until SIGKILL).
const interrupted = new AbortController();
const interrupt = (exitCode: number) => () => {
  if (interrupted.signal.aborted || getEventListeners(interrupted.signal, "abort").length === 0) process.exit(exitCode);
  interrupted.abort();
};
process.on("SIGINT", interrupt(130));
process.on("SIGTERM", interrupt(143));
// A reader that went away (`watch --json | head -1`) ends the run as Ctrl-C does: without a
// listener the write's EPIPE would crash the process with a stack trace
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code !== "EPIPE") throw error;
  interrupted.abort();
});
// A warning nobody can read any more (`list 2>&1 | head -1`) is dropped: the crash it caused
// replaced the run's exit code (3: too few instances answered) with 1, "nothing found"
process.stderr.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code !== "EPIPE") throw error;
});

process.exitCode = await runCli(process.argv.slice(2), {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signal: interrupted.signal,
});
