/**
 * The between-process rows: the case a distributed lock exists for. Each contender runs as
 * PROCESSES separate Node processes (process-worker.ts), each with its own library object and
 * its own connections, contending for one key; the in-process rows (core-rows.ts) keep all
 * workers on one shared object. Contention: every process loops acquire → ~1 ms section →
 * release. Queue: in rounds, every process asks once at the same moment.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { FLOOR, FLOOR_RETAKE_REFERENCE, PEERS, type Poll, REDLOCK_KIT } from "./contenders.js";
import { median, quantile } from "./measure.js";
import {
  machineMs,
  type SectionTimes,
  type WorkerCommand,
  type WorkerReport,
  type WorkerSetup,
} from "./process-protocol.js";
import type { Entry, Section } from "./results.js";
import { alternate, type RoundPlan, ratios } from "./rounds.js";

export const PROCESSES = 4;
/** Every poller waits 5–15 ms (mean 10) between attempts, except redlock-kit at its defaults. */
const POLL_10: Poll = { minMs: 5, maxMs: 15 };

type RowKind = "contention" | "queue";

const contenders: readonly { factory: string; label: string; poll: Poll; how: string; only?: RowKind }[] = [
  { factory: FLOOR.name, label: FLOOR.name, poll: POLL_10, how: "SET NX PX, polls every 5–15 ms" },
  {
    // a reference, not a peer: the retake protocol without a library (contenders.ts); in the
    // queue rows nobody loops, so it would be the floor again
    factory: FLOOR_RETAKE_REFERENCE.name,
    label: FLOOR_RETAKE_REFERENCE.name,
    poll: POLL_10,
    how: "SET NX PX, polls every 5–15 ms; a release within 50 ms of the SET sets the key to the next value (no library, never hands over)",
    only: "contention",
  },
  {
    factory: REDLOCK_KIT.name,
    label: "redlock-kit",
    poll: "default",
    how: "wait; woken by hand-over, fallback poll at its defaults (200–300 ms)",
  },
  {
    factory: REDLOCK_KIT.name,
    label: "redlock-kit (10 ms poll)",
    poll: POLL_10,
    how: "wait; woken by hand-over, fallback poll 5–15 ms",
  },
  ...PEERS.map((factory) => ({
    factory: factory.name,
    label: factory.name,
    poll: POLL_10,
    how: "polls every 5–15 ms",
  })),
];

interface Outcome {
  readonly sections: SectionTimes[][];
  readonly overlaps: number;
  readonly failed: number;
  readonly cpuUs: number;
}

/** PROCESSES workers of one contender, kept for a whole row. */
class Workers {
  readonly #children: ChildProcess[] = [];
  readonly #ready: Promise<unknown>;

  constructor(setup: WorkerSetup) {
    const script = new URL("./process-worker.js", import.meta.url);
    const ready: Promise<unknown>[] = [];
    for (let i = 0; i < PROCESSES; i++) {
      const child = fork(script, [JSON.stringify(setup)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      this.#children.push(child);
      ready.push(this.#next(child));
    }
    this.#ready = Promise.all(ready);
  }

  #next(child: ChildProcess): Promise<WorkerReport> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`bench worker exited with ${code}`));
      child.once("exit", onExit);
      child.once("message", (report: WorkerReport) => {
        child.off("exit", onExit);
        resolve(report);
      });
    });
  }

  async run(command: WorkerCommand): Promise<Outcome> {
    await this.#ready;
    const replies = this.#children.map((child) => this.#next(child));
    for (const child of this.#children) child.send(command);
    const reports = (await Promise.all(replies)).filter((r) => r.kind === "sections");
    return {
      sections: reports.map((r) => r.sections),
      overlaps: reports.reduce((sum, r) => sum + r.overlaps, 0),
      failed: reports.reduce((sum, r) => sum + r.failed, 0),
      cpuUs: reports.reduce((sum, r) => sum + r.cpuUs, 0),
    };
  }

  async close(): Promise<void> {
    await this.#ready.catch(() => {});
    await Promise.all(
      this.#children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.once("exit", () => resolve());
            child.send({ kind: "close" } satisfies WorkerCommand);
            setTimeout(() => child.kill("SIGKILL"), 5000).unref();
          }),
      ),
    );
  }
}

interface ProcessSample {
  readonly sectionsPerSec: number;
  /** Release resolved in one process → acquisition resolved in the next holder's, µs (< 0 counts as 0). */
  readonly gapsUs: number[];
  /** Release called → next acquisition resolved, µs. */
  readonly gapsFromCallUs: number[];
  /** Acquired → release called (the section, the witness's two round trips and its 1 ms sleep), µs each. */
  readonly holdsUs: number[];
  /** Release called → release resolved, µs each. */
  readonly releasesUs: number[];
  /** Acquisitions by another process than the one that held the key before. */
  readonly handOvers: number;
  readonly perProcess: number[];
  readonly overlaps: number;
  readonly failed: number;
  /** CPU time of all the contending processes per critical section, µs. */
  readonly cpuUsPerSection: number;
}

/** Where a burst's time went: gaps between consecutive sections in acquisition order, holds, releases. */
interface Phases {
  readonly gaps: number[];
  readonly fromCall: number[];
  readonly holds: number[];
  readonly releases: number[];
  handOvers: number;
}

const noPhases = (): Phases => ({ gaps: [], fromCall: [], holds: [], releases: [], handOvers: 0 });

/** Adds the sections of one burst (`perProcess[i]`: process i's sections) to `phases`. */
function phasesOf(perProcess: readonly (readonly SectionTimes[])[], phases: Phases): void {
  const ordered = perProcess
    .flatMap((sections, process) => sections.map((times) => ({ times, process })))
    .sort((a, b) => a.times.acquiredAt - b.times.acquiredAt);
  for (let i = 0; i < ordered.length; i++) {
    const { times, process } = ordered[i] as { times: SectionTimes; process: number };
    phases.holds.push((times.releaseCalledAt - times.acquiredAt) * 1000);
    phases.releases.push((times.releasedAt - times.releaseCalledAt) * 1000);
    const previous = ordered[i - 1];
    if (previous === undefined) continue;
    phases.gaps.push(Math.max(0, times.acquiredAt - previous.times.releasedAt) * 1000);
    phases.fromCall.push((times.acquiredAt - previous.times.releaseCalledAt) * 1000);
    if (previous.process !== process) phases.handOvers++;
  }
}

async function contend(workers: Workers, burstMs: number): Promise<ProcessSample> {
  const started = machineMs();
  const outcome = await workers.run({ kind: "contend", untilMs: started + burstMs });
  const elapsed = machineMs() - started;
  const phases = noPhases();
  phasesOf(outcome.sections, phases);
  const total = outcome.sections.reduce((sum, s) => sum + s.length, 0);
  return {
    sectionsPerSec: total / (elapsed / 1000),
    gapsUs: phases.gaps,
    gapsFromCallUs: phases.fromCall,
    holdsUs: phases.holds,
    releasesUs: phases.releases,
    handOvers: phases.handOvers,
    perProcess: outcome.sections.map((s) => s.length),
    overlaps: outcome.overlaps,
    failed: outcome.failed,
    cpuUsPerSection: outcome.cpuUs / total,
  };
}

async function queueRounds(workers: Workers, burstMs: number): Promise<ProcessSample> {
  const started = performance.now();
  const phases = noPhases();
  const perProcess = new Array<number>(PROCESSES).fill(0);
  let overlaps = 0;
  let failed = 0;
  let total = 0;
  let cpuUs = 0;
  while (performance.now() - started < burstMs) {
    const outcome = await workers.run({ kind: "once" });
    phasesOf(outcome.sections, phases);
    outcome.sections.forEach((s, i) => {
      perProcess[i] = (perProcess[i] ?? 0) + s.length;
      total += s.length;
    });
    overlaps += outcome.overlaps;
    failed += outcome.failed;
    cpuUs += outcome.cpuUs;
  }
  return {
    sectionsPerSec: total / ((performance.now() - started) / 1000),
    gapsUs: phases.gaps,
    gapsFromCallUs: phases.fromCall,
    holdsUs: phases.holds,
    releasesUs: phases.releases,
    handOvers: phases.handOvers,
    perProcess,
    overlaps,
    failed,
    cpuUsPerSection: cpuUs / total,
  };
}

function entry(label: string, how: string, mine: ProcessSample[], baseline: ProcessSample[]): Entry {
  const gaps = Float64Array.from(mine.flatMap((s) => s.gapsUs));
  const fromCall = Float64Array.from(mine.flatMap((s) => s.gapsFromCallUs));
  return {
    name: label,
    clients: `${PROCESSES} processes, each its own object and connections; ${how}`,
    score: median(mine.map((s) => s.sectionsPerSec)),
    ratio: ratios(
      mine.map((s) => s.sectionsPerSec),
      baseline.map((s) => s.sectionsPerSec),
    ),
    metrics: {
      gapP50Us: quantile(gaps, 0.5),
      gapP99Us: quantile(gaps, 0.99),
      gapFromCallP50Us: quantile(fromCall, 0.5),
      holdMeanUs: mean(mine.flatMap((s) => s.holdsUs)),
      releaseMeanUs: mean(mine.flatMap((s) => s.releasesUs)),
      handOversPerSection:
        mine.reduce((sum, s) => sum + s.handOvers, 0) / mine.reduce((sum, s) => sum + s.holdsUs.length, 0),
      fairness: median(mine.map((s) => Math.min(...s.perProcess) / Math.max(...s.perProcess))),
      overlaps: mine.reduce((sum, s) => sum + s.overlaps, 0),
      failed: mine.reduce((sum, s) => sum + s.failed, 0),
      cpuUsPerSection: median(mine.map((s) => s.cpuUsPerSection)),
    },
  };
}

const mean = (values: readonly number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;

/** Contention and queue rows on 1 and 3 instances, every contender as PROCESSES processes. */
export async function runProcessRows(
  ports: readonly number[],
  witnessPort: number,
  plans: { readonly contention: RoundPlan; readonly queue: RoundPlan },
  log: (line: string) => void,
): Promise<Section[]> {
  const sections: Section[] = [];
  for (const kind of ["contention", "queue"] satisfies RowKind[]) {
    for (const instances of [1, 3]) {
      const title =
        kind === "contention"
          ? `Between processes, contention: ${PROCESSES} processes loop on one key, ~1 ms section, ${instances} instance${instances > 1 ? "s" : ""}`
          : `Between processes, queue: ${PROCESSES} processes ask for one key at once per round, ~1 ms section, ${instances} instance${instances > 1 ? "s" : ""}`;
      log(`${title}…`);
      const row = contenders.filter((c) => c.only === undefined || c.only === kind);
      const pools = row.map(
        (c) =>
          new Workers({
            contender: c.factory,
            ports: ports.slice(0, instances),
            witnessPort,
            key: `bench:processes:${kind}:${randomBytes(6).toString("hex")}`,
            poll: c.poll,
          }),
      );
      try {
        const samples = await alternate<ProcessSample>(
          row.map((c, i) => ({
            name: c.label,
            clients: c.how,
            run: (ms) =>
              kind === "contention" ? contend(pools[i] as Workers, ms) : queueRounds(pools[i] as Workers, ms),
          })),
          kind === "contention" ? plans.contention : plans.queue,
        );
        const baseline = samples[0] as ProcessSample[];
        sections.push({
          id: `processes-${kind}-${instances}`,
          title,
          unit: "critical sections/s",
          baseline: FLOOR.name,
          target: kind === "contention" ? 1 : 2,
          entries: row.map((c, i) => entry(c.label, c.how, samples[i] as ProcessSample[], baseline)),
        });
      } finally {
        await Promise.all(pools.map((pool) => pool.close()));
      }
    }
  }
  return sections;
}
