/**
 * A Nest start that fails after RedlockModule built its Redlock, the error caught by the caller
 * (abortOnError: false): Nest runs no hook then (no app is returned to close when NestFactory.create
 * or createApplicationContext rejects), so the clients the module creates from URLs and options
 * must not be open: they connect at the Redlock's first call. Each case is a child process
 * (fixtures/failed-start.mjs, the BUILT package) that must have nothing left and exit by itself.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";
import { requireBuiltCore } from "#test-helpers/workers.js";

const script = fileURLToPath(new URL("./fixtures/failed-start.mjs", import.meta.url));
const cluster = useRedisServers(2);

beforeAll(() => {
  requireBuiltCore();
  if (!existsSync(new URL("../dist/index.js", import.meta.url))) {
    throw new Error("packages/nestjs/dist is missing: run `pnpm --filter @redlock-kit/nestjs... build`");
  }
});

interface Config {
  api: "forRoot" | "forRootAsync";
  how: "factory" | "built-late" | "init" | "listen" | "used";
  handed?: boolean;
}

/**
 * What the child reported (the start's error, what it had left), and its exit code. A child with
 * something left is killed at once: it would not exit by itself.
 */
async function failedStart(config: Config): Promise<Record<string, unknown>> {
  const ports = cluster.servers.map((server) => server.port);
  const child = spawn(process.execPath, [script, JSON.stringify({ ports, ...config })], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const reported = new Promise<void>((resolve) => {
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      if (stdout.includes("\n")) resolve();
    });
    void exited.then(() => resolve());
  });
  await reported;
  if (!stdout.includes("\n")) return { stdout, stderr, code: await exited };
  const report = JSON.parse(stdout) as { left: string[] };
  if (report.left.length > 0 && child.exitCode === null) {
    child.kill("SIGKILL");
    await exited;
    return { ...report, code: "killed: it had not exited" };
  }
  return { ...report, code: await exited };
}

const timeout = 60_000;

describe("a start that fails after RedlockModule built its Redlock, the error caught", () => {
  for (const api of ["forRoot", "forRootAsync"] as const) {
    it(
      `${api}: another provider's factory throws, NestFactory.create rejects: nothing is left open and the process exits`,
      async () => {
        expect(await failedStart({ api, how: "factory" })).toEqual({ error: "factory failed", left: [], code: 0 });
      },
      timeout,
    );

    it(
      `${api}: another provider's onModuleInit throws, createApplicationContext rejects: nothing is left open and the process exits`,
      async () => {
        expect(await failedStart({ api, how: "init" })).toEqual({
          error: "another provider's onModuleInit failed",
          left: [],
          code: 0,
        });
      },
      timeout,
    );

    it(
      `${api}: app.listen() fails (its port in use) and the app is not closed: nothing is left open and the process exits`,
      async () => {
        const [busy] = cluster.servers;
        expect(await failedStart({ api, how: "listen" })).toEqual({
          error: `listen EADDRINUSE: address already in use 127.0.0.1:${busy?.port}`,
          left: [],
          code: 0,
        });
      },
      timeout,
    );
  }

  it(
    "forRootAsync: useFactory returns once the error reached the caller, and Nest builds the Redlock then: it opens nothing",
    async () => {
      expect(await failedStart({ api: "forRootAsync", how: "built-late" })).toEqual({
        error: "factory failed",
        left: [],
        code: 0,
      });
    },
    timeout,
  );

  it(
    "a client handed in stays open for its owner, who closes it; then the process exits",
    async () => {
      expect(await failedStart({ api: "forRoot", how: "factory", handed: true })).toEqual({
        error: "factory failed",
        handed: "ready PONG",
        left: [],
        code: 0,
      });
    },
    timeout,
  );

  it(
    "a start that took a lock before it failed: app.close() after the failure closes the clients the module created",
    async () => {
      expect(await failedStart({ api: "forRoot", how: "used" })).toEqual({
        error: "another provider's onModuleInit failed",
        left: [],
        code: 0,
      });
    },
    timeout,
  );
});
