/**
 * `pnpm demo` end to end: the root script builds, then runs the Express example's `demo` script,
 * which this test runs as is (the build has run already: rebuilding here would rewrite dist/
 * files that other test files are loading).
 */
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect, it } from "vitest";
import { probeRedis } from "../examples/support/src/index.js";

const run = promisify(execFile);
const root = fileURLToPath(new URL("..", import.meta.url));
const DEMO = "pnpm --filter @redlock-kit/example-express run demo";

function row(output: string, route: string) {
  const line = output.split("\n").find((candidate) => candidate.startsWith(route));
  expect(line, `no row for ${route} in:\n${output}`).toBeDefined();
  const cells = (line ?? "").slice(route.length).trim().split(/\s+/).map(Number);
  expect(cells, `a row of 7 numbers: ${line}`).toHaveLength(7);
  const [requests = NaN, ok = NaN, locked = NaN, other = NaN, expected = NaN, actual = NaN, lost = NaN] = cells;
  return { requests, ok, locked, other, expected, actual, lost };
}

it("`pnpm demo` runs the demo script after building", () => {
  const manifest = JSON.parse(readFileSync(`${root}package.json`, "utf8")) as { scripts: Record<string, string> };
  expect(manifest.scripts.demo?.endsWith(`&& ${DEMO}`)).toBe(true);
});

it("exits 0 on its own, prints a table whose locked route lost no update, and stops its redis-servers", async () => {
  expect(existsSync(`${root}examples/express/dist/demo.js`), "run `pnpm build` first").toBe(true);
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.REDIS_URL;
  const [command = "pnpm", ...args] = DEMO.split(" ");
  // execFile rejects on a non-zero exit code or on the timeout, failing the test with the output
  const { stdout } = await run(command, args, { cwd: root, env, timeout: 60_000 });

  const unlocked = row(stdout, "POST /counters/unlocked/unsafe-increment");
  expect(unlocked.requests).toBe(50);
  expect(unlocked.actual).toBe(unlocked.expected - unlocked.lost);

  const locked = row(stdout, "POST /counters/locked/increment");
  expect(locked.requests).toBe(50);
  expect(locked.ok).toBeGreaterThan(0);
  expect(locked.expected).toBe(locked.ok);
  expect(locked.actual).toBe(locked.expected);
  expect(locked.lost).toBe(0);

  const ports = /redis-server processes on 127\.0\.0\.1 ports ([\d, ]+)/
    .exec(stdout)?.[1]
    ?.split(",")
    .map((port) => Number(port.trim()));
  expect(ports).toHaveLength(3);
  for (const port of ports ?? []) expect(await probeRedis({ host: "127.0.0.1", port }, 200)).toBe(false);
}, 90_000);
