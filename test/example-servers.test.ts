/**
 * Each example's built server.ts, run as `start` runs it: it chooses where its locks live, prints
 * its URL and curl lines, serves, and stops the redis-servers it started on SIGTERM or on exit.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { probeRedis } from "../examples/support/src/index.js";
import { sleep } from "./helpers/redis-servers.js";

const run = promisify(execFile);
const examplesDir = fileURLToPath(new URL("../examples/", import.meta.url));
const built = (path: string) => {
  const file = `${examplesDir}${path}`;
  expect(existsSync(file), `${file} is missing: run \`pnpm build\` first`).toBe(true);
  return file;
};

function envWithoutRedisUrl(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: "0" };
  delete env.REDIS_URL;
  return env;
}

/** Collects stdout until `pattern` matches it; rejects if the process exits first. */
function waitForOutput(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (pattern.test(out)) resolve(out);
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.once("exit", (code) => reject(new Error(`exited with ${code} before printing ${pattern}:\n${out}${err}`)));
  });
}

/** The redis-server ports a banner or the demo printed. */
function printedPorts(output: string): number[] {
  const match = /redis-server processes on 127\.0\.0\.1 ports ([\d, ]+)/.exec(output);
  return (match?.[1] ?? "").split(",").map((port) => Number(port.trim()));
}

async function allDown(ports: readonly number[]): Promise<boolean> {
  const up = await Promise.all(ports.map((port) => probeRedis({ host: "127.0.0.1", port }, 200)));
  return up.every((answered) => !answered);
}

describe.each(["express", "koa", "fastify", "hono", "decorators", "nestjs"])("examples/%s dist/server.js", (name) => {
  it("prints its URL and curl lines, answers the first one with 200, and stops its redis-servers on SIGTERM", async () => {
    const child = spawn(process.execPath, [built(`${name}/dist/server.js`)], {
      cwd: `${examplesDir}${name}`,
      env: envWithoutRedisUrl(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    try {
      const banner = await waitForOutput(child, /Ctrl-C stops it\./);
      const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(banner)?.[1];
      expect(url).toBeDefined();
      expect(banner).toContain(`curl -s -w ' %{http_code}\\n' -X POST ${url}/api/resource`);
      expect(banner).toContain(`curl -s -w ' %{http_code}\\n' -X POST ${url}/orders/42/pay`);
      const ports = printedPorts(banner);
      expect(ports).toHaveLength(3);
      expect(await allDown(ports)).toBe(false);

      const response = await fetch(`${url}/api/resource`, { method: "POST" });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ status: "success" });

      child.kill("SIGTERM");
      expect(await exited).toBe(0);
      expect(await allDown(ports)).toBe(true);
    } finally {
      // SIGTERM first: a SIGKILLed server could not stop the redis-servers it started
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await Promise.race([exited, sleep(5000)]);
        child.kill("SIGKILL");
      }
    }
  });
});

it("stops the throwaway redis-servers when the process exits without closing them", async () => {
  built("support/dist/index.js");
  const script = [
    'import { startBackend } from "@redlock-kit/example-support";',
    "const backend = await startBackend();",
    "console.log(backend.description);",
    "process.exit(0);",
  ].join("\n");
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], {
    cwd: `${examplesDir}express`,
    env: envWithoutRedisUrl(),
  });
  const ports = printedPorts(stdout);
  expect(ports).toHaveLength(3);
  // SIGKILL was sent from the exit hook; the kernel closes the listening sockets once the processes die
  await expect.poll(() => allDown(ports), { timeout: 5000, interval: 50 }).toBe(true);
});
