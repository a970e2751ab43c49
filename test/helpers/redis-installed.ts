import { execFileSync } from "node:child_process";

export function assertRedisInstalled(): void {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "pipe" });
  } catch {
    throw new Error(
      "redis-server is not installed: the tests run against real Redis. Install it with `apt-get install -y redis-server` (Debian/Ubuntu) or `brew install redis` (macOS).",
    );
  }
}
