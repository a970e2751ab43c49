/**
 * HTTP rows: a route behind redlock-kit's middleware vs the same route without a lock, per
 * framework. The server runs in a child process (http-server.ts); autocannon runs here, so
 * the load generator never competes with the server inside one event loop.
 */
import { type ChildProcess, fork } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import { BENCH_DIR } from "./machine.js";
import { median } from "./measure.js";
import type { Entry, Section } from "./results.js";
import { alternate, type RoundPlan, ratios } from "./rounds.js";

export const FRAMEWORKS = ["express", "koa", "fastify", "hono"] as const;
export type Framework = (typeof FRAMEWORKS)[number];
export const CONNECTIONS = 50;
export const KEYS = 1000;

/** What the server child reports once it listens. */
export interface ServerReady {
  readonly port: number;
  readonly routes: readonly { readonly name: string; readonly prefix: string; readonly clients: string }[];
}

/** Adapter packages of `frameworks` that are not built yet (the HTTP rows need them). */
export function httpAvailable(frameworks: readonly Framework[] = FRAMEWORKS): string[] {
  return frameworks
    .filter((framework) => !existsSync(join(BENCH_DIR, "node_modules", "@redlock-kit", framework, "dist", "index.js")))
    .map((framework) => `@redlock-kit/${framework} is not built`);
}

function startServer(framework: Framework, redisPort: number): Promise<{ child: ChildProcess; ready: ServerReady }> {
  const script = fileURLToPath(new URL("./http-server.js", import.meta.url));
  const child = fork(script, [framework, String(redisPort)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve, reject) => {
    child.once("message", (ready) => resolve({ child, ready: ready as ServerReady }));
    child.once("exit", (code) => reject(new Error(`${framework} server exited with ${code} before listening`)));
  });
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}

interface HttpSample {
  readonly okPerSec: number;
  /** The server process's CPU time (user + system) per 2xx response, in µs: less noisy than requests/s. */
  readonly serverCpuUs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly non2xx: number;
  readonly errors: number;
}

/** The server child's `process.cpuUsage()` (user + system µs), asked over IPC. */
function serverCpu(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown) => {
      const cpu = (message as { cpu?: NodeJS.CpuUsage }).cpu;
      if (!cpu) return;
      child.off("message", onMessage);
      resolve(cpu.user + cpu.system);
    };
    child.on("message", onMessage);
    child.send("cpu");
  });
}

/** `CONNECTIONS` connections posting to /<prefix>/orders/<id>/pay, ids cycling over `KEYS`. */
async function load(child: ChildProcess, port: number, prefix: string, ms: number): Promise<HttpSample> {
  let next = 0;
  const cpuBefore = await serverCpu(child);
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: ms / 1000,
    // autocannon stops at its first sample tick after `duration`: one tick per burst, or a 0.5 s
    // burst would run for its default 1 s tick
    sampleInt: ms,
    requests: [
      {
        method: "POST",
        setupRequest: (request) => ({ ...request, path: `${prefix}/orders/${next++ % KEYS}/pay` }),
      },
    ],
  });
  const cpuUs = (await serverCpu(child)) - cpuBefore;
  return {
    okPerSec: result["2xx"] / result.duration,
    serverCpuUs: cpuUs / Math.max(1, result["2xx"]),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  };
}

export async function runHttpRows(
  redisPorts: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
  frameworks: readonly Framework[] = FRAMEWORKS,
): Promise<Section[]> {
  const sections: Section[] = [];
  for (const framework of frameworks) {
    const title = `HTTP: ${framework} route, ${CONNECTIONS} connections over ${KEYS.toLocaleString("en-US")} keys`;
    log(`${title}…`);
    const { child, ready } = await startServer(framework, redisPorts[0] as number);
    try {
      const samples = await alternate<HttpSample>(
        ready.routes.map((route) => ({
          name: route.name,
          clients: route.clients,
          run: (ms) => load(child, ready.port, route.prefix, ms),
        })),
        plan,
      );
      const okPerSec = (index: number) => (samples[index] as HttpSample[]).map((sample) => sample.okPerSec);
      const baseline = okPerSec(0);
      // issue 17's Express target is relative to the floor middleware: its ratio in the same
      // rounds leaves out the no-lock route's own round-to-round noise
      const floorIndex = ready.routes.findIndex((route) => route.name.startsWith("floor middleware"));
      const entries: Entry[] = ready.routes.map((route, index) => {
        const mine = samples[index] as HttpSample[];
        const scores = okPerSec(index);
        return {
          name: route.name,
          clients: route.clients,
          score: median(scores),
          ratio: ratios(scores, baseline),
          metrics: {
            p50Ms: median(mine.map((sample) => sample.p50Ms)),
            p99Ms: median(mine.map((sample) => sample.p99Ms)),
            serverCpuUs: median(mine.map((sample) => sample.serverCpuUs)),
            non2xx: mine.reduce((sum, sample) => sum + sample.non2xx + sample.errors, 0),
            vsFloorMiddleware: floorIndex < 0 ? Number.NaN : ratios(scores, okPerSec(floorIndex)).median,
          },
        };
      });
      sections.push({
        id: `http-${framework}`,
        title,
        unit: "2xx responses/s",
        baseline: (ready.routes[0] as ServerReady["routes"][number]).name,
        entries,
      });
    } finally {
      await stopServer(child);
    }
  }
  return sections;
}
