/** The rows that call the libraries directly: sequential, concurrent, contention, queue. */
import {
  type Contender,
  type ContenderFactory,
  FLOOR,
  FLOOR_ON_SCRIPTS,
  FLOOR_PIPELINED,
  PEERS,
  type Poll,
  REDLOCK_KIT,
  REDLOCK_KIT_HANDED,
} from "./contenders.js";
import {
  type ContentionSample,
  concurrent,
  contention,
  median,
  type QueueSample,
  quantile,
  queue,
  type Sample,
  sequential,
} from "./measure.js";
import type { Entry, Section } from "./results.js";
import { alternate, type RoundPlan, ratios, withContenders } from "./rounds.js";

export const CONCURRENT_WORKERS = 64;
export const CONTENDING_WORKERS = 8;

const throughputRows: readonly {
  kind: "sequential" | "concurrent";
  instances: 1 | 3;
  target?: number;
  factories: readonly ContenderFactory[];
}[] = [
  {
    kind: "sequential",
    instances: 1,
    target: 0.95,
    factories: [FLOOR, FLOOR_ON_SCRIPTS, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS],
  },
  {
    kind: "sequential",
    instances: 3,
    target: 0.95,
    factories: [FLOOR, FLOOR_ON_SCRIPTS, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS],
  },
  {
    kind: "concurrent",
    instances: 1,
    target: 1.0,
    factories: [FLOOR, FLOOR_PIPELINED, FLOOR_ON_SCRIPTS, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS],
  },
  {
    kind: "concurrent",
    instances: 3,
    target: 1.5,
    factories: [FLOOR, FLOOR_PIPELINED, FLOOR_ON_SCRIPTS, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS],
  },
];

function entry(contender: Contender, scores: number[], baseline: number[], metrics: Record<string, number>): Entry {
  return {
    name: contender.name,
    clients: contender.clients,
    score: median(scores),
    ratio: ratios(scores, baseline),
    metrics,
  };
}

/**
 * One entry per contender from its samples ([contender][round], the first is the baseline): rate
 * and client CPU as ratios to the baseline in the same round, and latency p50/p99 when the samples
 * carry latencies (sequential loops).
 */
export function throughputEntries(contenders: readonly Contender[], samples: readonly Sample[][]): Entry[] {
  const base = samples[0] as Sample[];
  const baseline = base.map((sample) => sample.opsPerSec);
  return contenders.map((contender, index) => {
    const mine = samples[index] as Sample[];
    const metrics: Record<string, number> = {
      cpuUsPerOp: median(mine.map((sample) => sample.cpuUsPerOp)),
      cpuRatio: median(mine.map((sample, round) => sample.cpuUsPerOp / (base[round] as Sample).cpuUsPerOp)),
    };
    if (mine.some((sample) => sample.latenciesUs !== undefined)) {
      const all = Float64Array.from(mine.flatMap((sample) => Array.from(sample.latenciesUs ?? [])));
      metrics.p50Us = quantile(all, 0.5);
      metrics.p99Us = quantile(all, 0.99);
    }
    return entry(
      contender,
      mine.map((sample) => sample.opsPerSec),
      baseline,
      metrics,
    );
  });
}

export type ThroughputRow = (typeof throughputRows)[number];

export async function runThroughputRows(
  ports: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
): Promise<Section[]> {
  const sections: Section[] = [];
  for (const row of throughputRows) sections.push(await runThroughputRow(row, ports, plan, log));
  return sections;
}

/**
 * One throughput row: `row.factories` alternated round by round, each × the first (the floor).
 * `variant` marks rows of another client library: a prefix of the id and words after the title.
 */
export async function runThroughputRow(
  row: ThroughputRow,
  ports: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
  variant?: { readonly id: string; readonly title: string },
): Promise<Section> {
  const id = `${variant ? `${variant.id}-` : ""}${row.kind}-${row.instances}`;
  const title = `${
    row.kind === "sequential"
      ? `Sequential lock+unlock, distinct keys, ${row.instances} instance${row.instances > 1 ? "s" : ""}`
      : `Concurrent lock+unlock, ${CONCURRENT_WORKERS} workers on distinct keys, ${row.instances} instance${row.instances > 1 ? "s" : ""}`
  }${variant ? `, ${variant.title}` : ""}`;
  log(`${title}…`);
  const baselineName = (row.factories[0] as ContenderFactory).name;
  return withContenders(row.factories, ports.slice(0, row.instances), async (contenders) => {
    const samples = await alternate<Sample>(
      contenders.map((contender) => ({
        name: contender.name,
        clients: contender.clients,
        run: (ms) =>
          row.kind === "sequential" ? sequential(contender, ms) : concurrent(contender, CONCURRENT_WORKERS, ms),
      })),
      plan,
    );
    const entries = throughputEntries(contenders, samples);
    return { id, title, unit: "lock+unlock/s", baseline: baselineName, target: row.target, entries };
  });
}

export async function runContentionRow(
  ports: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
): Promise<Section> {
  const title = `In one process, contention: ${CONTENDING_WORKERS} workers share one library object, one key, ~1 ms critical section, 1 instance`;
  log(`${title}…`);
  return withContenders([FLOOR, REDLOCK_KIT, ...PEERS], ports.slice(0, 1), async (contenders) => {
    const samples = await alternate<ContentionSample>(
      contenders.map((contender) => ({
        name: contender.name,
        clients: contender.clients,
        run: (ms) => contention(contender, CONTENDING_WORKERS, ms),
      })),
      plan,
    );
    const baseline = (samples[0] as ContentionSample[]).map((sample) => sample.sectionsPerSec);
    const entries = contenders.map((contender, index) => {
      const mine = samples[index] as ContentionSample[];
      const gaps = Float64Array.from(mine.flatMap((sample) => Array.from(sample.gapsUs)));
      const fairness = mine.map((sample) => Math.min(...sample.perWorker) / Math.max(...sample.perWorker));
      return entry(
        contender,
        mine.map((sample) => sample.sectionsPerSec),
        baseline,
        {
          gapP50Us: quantile(gaps, 0.5),
          gapP99Us: quantile(gaps, 0.99),
          fairness: median(fairness),
          overlaps: mine.reduce((sum, sample) => sum + sample.overlaps, 0),
          sameHolder: median(mine.map((sample) => sample.sameHolder)),
        },
      );
    });
    return { id: "contention-1", title, unit: "critical sections/s", baseline: FLOOR.name, entries };
  });
}

export const QUEUE_WORKERS = 8;
/** Issue 8's target for redlock-kit in the queue rows: critical sections/s × the polling floor. */
export const QUEUE_TARGET = 2;

/** Every queue contender polls every 10 ms on average, except redlock-kit at its defaults. */
const queueContenders: readonly { factory: ContenderFactory; name?: string; poll: Poll; how: string }[] = [
  { factory: FLOOR, poll: { minMs: 10, maxMs: 10 }, how: "SET NX PX retried every 10 ms" },
  {
    factory: REDLOCK_KIT,
    poll: "default",
    how: "wait; woken by release notifications, fallback poll at its defaults (retryDelay 200, retryJitter 100: 200–300 ms)",
  },
  {
    factory: REDLOCK_KIT,
    name: "redlock-kit (10 ms poll)",
    poll: { minMs: 10, maxMs: 20 },
    how: "wait; woken by release notifications, fallback poll retryDelay 10, retryJitter 10 (10–20 ms)",
  },
  ...PEERS.map((factory) =>
    factory.name.includes("redlock") && !factory.name.includes("universal")
      ? { factory, poll: { minMs: 0, maxMs: 20 }, how: "retryDelay 10, retryJitter 10 (polls every 0–20 ms)" }
      : {
          factory,
          poll: { minMs: 10, maxMs: 10 },
          how: factory.name === "redis-semaphore" ? "retryInterval 10" : "retryDelay 10",
        },
  ),
];

/** `min / max` of `values` (1 = all equal). */
function spread(values: readonly number[]): number {
  return Math.min(...values) / Math.max(...values);
}

export async function runQueueRows(
  ports: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
): Promise<Section[]> {
  const sections: Section[] = [];
  for (const instances of [1, 3]) {
    const title = `In one process, queue: ${QUEUE_WORKERS} workers share one library object and ask for one key at once, once each per round, ~1 ms critical section, ${instances} instance${instances > 1 ? "s" : ""}`;
    log(`${title}…`);
    const factories = queueContenders.map((c) => c.factory);
    const section = await withContenders(factories, ports.slice(0, instances), async (created) => {
      const contenders = created.map((contender, index) => {
        const row = queueContenders[index] as (typeof queueContenders)[number];
        return { ...contender, name: row.name ?? contender.name, clients: `${contender.clients}; ${row.how}`, row };
      });
      const samples = await alternate<QueueSample>(
        contenders.map((contender) => ({
          name: contender.name,
          clients: contender.clients,
          run: (ms) => queue(contender, QUEUE_WORKERS, contender.row.poll, ms),
        })),
        plan,
      );
      const baseline = (samples[0] as QueueSample[]).map((sample) => sample.sectionsPerSec);
      const entries = contenders.map((contender, index) => {
        const mine = samples[index] as QueueSample[];
        const gaps = Float64Array.from(mine.flatMap((sample) => Array.from(sample.gapsUs)));
        const fromCall = Float64Array.from(mine.flatMap((sample) => Array.from(sample.gapsFromCallUs)));
        const sectionsPerWorker = new Array<number>(QUEUE_WORKERS).fill(0);
        const waitPerWorker = new Array<number>(QUEUE_WORKERS).fill(0);
        for (const sample of mine) {
          for (let w = 0; w < QUEUE_WORKERS; w++) {
            sectionsPerWorker[w] = (sectionsPerWorker[w] ?? 0) + (sample.perWorker[w] ?? 0);
            waitPerWorker[w] = (waitPerWorker[w] ?? 0) + (sample.waitUsPerWorker[w] ?? 0);
          }
        }
        const meanWaits = waitPerWorker.map((wait, w) => wait / (sectionsPerWorker[w] ?? 1));
        return entry(
          contender,
          mine.map((sample) => sample.sectionsPerSec),
          baseline,
          {
            gapP50Us: quantile(gaps, 0.5),
            gapP99Us: quantile(gaps, 0.99),
            gapFromCallP50Us: quantile(fromCall, 0.5),
            gapFromCallP99Us: quantile(fromCall, 0.99),
            handOffs: gaps.length,
            earlyShare: mine.reduce((sum, sample) => sum + sample.early, 0) / gaps.length,
            fairness: spread(sectionsPerWorker),
            waitFairness: spread(meanWaits),
            meanWaitUs: median(meanWaits),
            overlaps: mine.reduce((sum, sample) => sum + sample.overlaps, 0),
            rounds: mine.reduce((sum, sample) => sum + sample.rounds, 0),
          },
        );
      });
      return {
        id: `queue-${instances}`,
        title,
        unit: "critical sections/s",
        baseline: FLOOR.name,
        target: QUEUE_TARGET,
        entries,
      };
    });
    sections.push(section);
  }
  return sections;
}
