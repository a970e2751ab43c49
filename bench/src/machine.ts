/** Where and with what a run happened, stored with its results. */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Machine } from "./results.js";

/** bench/, found upward from this file (it runs from bench/dist/…). */
export const BENCH_DIR = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, "utf8")).name === "@redlock-kit/bench") return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error("bench/package.json not found above the benchmark's files");
    dir = parent;
  }
})();

const LIBRARIES = [
  "@redlock-kit/core",
  "ioredis",
  "redlock",
  "@sesamecare-oss/redlock",
  "redis-semaphore",
  "redlock-universal",
  "express",
  "koa",
  "fastify",
  "hono",
  "@hono/node-server",
  "autocannon",
];

function version(name: string): string {
  try {
    return JSON.parse(readFileSync(join(BENCH_DIR, "node_modules", name, "package.json"), "utf8")).version;
  } catch {
    return "?";
  }
}

function run(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "?";
  }
}

export function machine(): Machine {
  const redis = run("redis-server", ["--version"]).match(/v=(\S+)/)?.[1] ?? "?";
  const commit = run("git", ["-C", BENCH_DIR, "rev-parse", "--short", "HEAD"]);
  const dirty = run("git", ["-C", BENCH_DIR, "status", "--porcelain", "--untracked-files=no"]) !== "";
  return {
    date: `${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`,
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model.trim() ?? "?",
    node: process.versions.node,
    redisServer: redis,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    commit: dirty ? `${commit} (with uncommitted changes)` : commit,
    versions: Object.fromEntries(LIBRARIES.map((name) => [name, version(name)])),
  };
}
