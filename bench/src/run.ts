/**
 * `pnpm bench [--quick] [--only=sequential,concurrent,fencing,tracing,noderedis,contention,queue,processes,http,hono,commands,soak]`
 * (`http` runs every framework's HTTP row, `hono` the Hono row alone)
 *
 * Starts its own redis-server processes on free loopback ports, measures redlock-kit, the
 * raw-ioredis floor and the peer libraries in this one process (alternating them in rounds),
 * runs the HTTP rows against a server in a child process, prints a markdown table, and writes
 * bench/results/{latest,quick,partial}.{json,md,svg} (a full run, --quick, --only=…).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { assertRedisInstalled } from "../../test/helpers/redis-installed.js";
import { type RedisServer, startServers } from "../../test/helpers/redis-process.js";
import { chart } from "./chart.js";
import { runCommandCounts } from "./commands.js";
import { FLOOR, PEERS, REDLOCK_KIT, REDLOCK_KIT_HANDED } from "./contenders.js";
import { runContentionRow, runQueueRows, runThroughputRows } from "./core-rows.js";
import { COST_ROWS, runCostRows } from "./cost-rows.js";
import { FRAMEWORKS, type Framework, httpAvailable, runHttpRows } from "./http.js";
import { BENCH_DIR, machine } from "./machine.js";
import { runNodeRedisRows } from "./node-redis-rows.js";
import { runProcessRows } from "./process-rows.js";
import { markdown } from "./report.js";
import type { CommandCount, Results, Section, Soak } from "./results.js";
import type { RoundPlan } from "./rounds.js";
import { runSoak } from "./soak.js";

const ROWS = [
  "sequential",
  "concurrent",
  ...COST_ROWS,
  "noderedis",
  "contention",
  "queue",
  "processes",
  "http",
  "hono",
  "commands",
  "soak",
] as const;
type Row = (typeof ROWS)[number];

interface Plan {
  readonly throughput: RoundPlan;
  readonly contention: RoundPlan;
  readonly queue: RoundPlan;
  readonly http: RoundPlan;
  readonly soakCycles: number;
  readonly commandCycles: number;
}

const PLANS: Record<"full" | "quick", Plan> = {
  full: {
    throughput: { rounds: 21, burstMs: 200, warmupMs: 300 },
    contention: { rounds: 9, burstMs: 1500, warmupMs: 300 },
    queue: { rounds: 7, burstMs: 1000, warmupMs: 300 },
    http: { rounds: 11, burstMs: 1000, warmupMs: 1000 },
    soakCycles: 100_000,
    commandCycles: 2000,
  },
  quick: {
    throughput: { rounds: 5, burstMs: 60, warmupMs: 60 },
    contention: { rounds: 1, burstMs: 500, warmupMs: 100 },
    queue: { rounds: 1, burstMs: 400, warmupMs: 100 },
    http: { rounds: 1, burstMs: 400, warmupMs: 150 },
    soakCycles: 20_000,
    commandCycles: 500,
  },
};

function parseArgs(argv: readonly string[]): { mode: "full" | "quick"; rows: Set<Row>; partial: boolean } {
  let mode: "full" | "quick" = "full";
  let rows = new Set<Row>(ROWS);
  let partial = false;
  for (const arg of argv) {
    if (arg === "--") continue;
    if (arg === "--quick") mode = "quick";
    else if (arg.startsWith("--only=")) {
      const wanted = arg.slice("--only=".length).split(",");
      for (const row of wanted) {
        if (!(ROWS as readonly string[]).includes(row)) throw new Error(`--only: unknown row ${row}; rows: ${ROWS}`);
      }
      rows = new Set(wanted as Row[]);
      partial = true;
    } else throw new Error(`unknown argument ${arg}; usage: pnpm bench [--quick] [--only=${ROWS.join(",")}]`);
  }
  return { mode, rows, partial };
}

async function main(): Promise<void> {
  const { mode, rows, partial } = parseArgs(process.argv.slice(2));
  const plan = PLANS[mode];
  const began = performance.now();
  const log = (line: string) => process.stderr.write(`[${((performance.now() - began) / 1000).toFixed(0)}s] ${line}\n`);
  const notes: string[] = [];
  if (!(globalThis as { gc?: unknown }).gc) {
    notes.push("Run without --expose-gc: no GC between bursts, and heap figures include uncollected garbage.");
  }
  assertRedisInstalled();
  // three lock instances and a witness for the between-process rows
  const servers: RedisServer[] = await startServers(4);
  const stop = async () => {
    await Promise.all(servers.map((server) => server.stop()));
  };
  process.once("SIGINT", () => {
    void stop().finally(() => process.exit(130));
  });
  try {
    const ports = servers.slice(0, 3).map((server) => server.port);
    const witnessPort = (servers[3] as RedisServer).port;
    const admins = servers.slice(0, 3).map((server) => server.client());
    log(`redis-server on ports ${ports.join(", ")}; ${mode} run`);
    const sections: Section[] = [];
    let commands: CommandCount[] = [];
    let soak: Soak[] = [];
    if (rows.has("sequential") || rows.has("concurrent")) {
      const all = await runThroughputRows(ports, plan.throughput, log);
      sections.push(...all.filter((section) => rows.has(section.id.split("-")[0] as Row)));
    }
    const costRows = COST_ROWS.filter((row) => rows.has(row));
    if (costRows.length > 0) sections.push(...(await runCostRows(costRows, ports, plan.throughput, log)));
    if (rows.has("noderedis")) sections.push(...(await runNodeRedisRows(ports, plan.throughput, log)));
    if (rows.has("contention")) sections.push(await runContentionRow(ports, plan.contention, log));
    if (rows.has("queue")) sections.push(...(await runQueueRows(ports, plan.queue, log)));
    if (rows.has("processes")) {
      sections.push(
        ...(await runProcessRows(ports, witnessPort, { contention: plan.contention, queue: plan.queue }, log)),
      );
    }
    if (rows.has("http") || rows.has("hono")) {
      const frameworks: readonly Framework[] = rows.has("http") ? FRAMEWORKS : ["hono"];
      const missing = httpAvailable(frameworks);
      if (missing.length === 0) sections.push(...(await runHttpRows(ports.slice(0, 1), plan.http, log, frameworks)));
      else notes.push(`HTTP rows skipped: ${missing.join("; ")}.`);
    }
    if (rows.has("commands")) {
      const factories = [FLOOR, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS];
      commands = await runCommandCounts(factories, admins, plan.commandCycles, log);
    }
    if (rows.has("soak"))
      soak = await runSoak([FLOOR, REDLOCK_KIT], admins[0] as (typeof admins)[number], plan.soakCycles, log);

    const results: Results = {
      mode,
      machine: machine(),
      plan: {
        rounds: plan.throughput.rounds,
        burstMs: plan.throughput.burstMs,
        contentionRounds: plan.contention.rounds,
        contentionBurstMs: plan.contention.burstMs,
        queueRounds: plan.queue.rounds,
        queueBurstMs: plan.queue.burstMs,
        httpRounds: plan.http.rounds,
        httpBurstMs: plan.http.burstMs,
        soakCycles: plan.soakCycles,
        commandCycles: plan.commandCycles,
        seconds: Math.round((performance.now() - began) / 1000),
      },
      sections,
      commands,
      soak,
      notes,
    };
    const table = markdown(results);
    process.stdout.write(table);
    const dir = join(BENCH_DIR, "results");
    mkdirSync(dir, { recursive: true });
    // a partial run never overwrites the committed full results
    const name = partial ? "partial" : mode === "full" ? "latest" : "quick";
    writeFileSync(join(dir, `${name}.json`), `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(join(dir, `${name}.md`), table);
    if (sections.length > 0) writeFileSync(join(dir, `${name}.svg`), chart(results));
    log(`wrote bench/results/${name}.{json,md${sections.length > 0 ? ",svg" : ""}}`);
  } finally {
    await stop();
  }
}

main().then(
  // clients a peer library forgot to close must not keep the process alive
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
