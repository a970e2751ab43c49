#!/usr/bin/env node
import { runCli } from "./run.js";

// The first Ctrl-C ends `watch` (or answers a question) cleanly; a second one kills as usual.
const interrupted = new AbortController();
process.once("SIGINT", () => interrupted.abort());

process.exitCode = await runCli(process.argv.slice(2), {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signal: interrupted.signal,
});
