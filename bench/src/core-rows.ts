/** The rows that call the libraries directly: sequential, concurrent, contention. */
import {
  type Contender,
  type ContenderFactory,
  FLOOR,
  FLOOR_PIPELINED,
  PEERS,
  REDLOCK_KIT,
  REDLOCK_KIT_HANDED,
} from "./contenders.js";
import { type ContentionSample, concurrent, contention, median, quantile, type Sample, sequential } from "./measure.js";
import type { Entry, Section } from "./results.js";
import { alternate, type RoundPlan, ratios, withContenders } from "./rounds.js";

export const CONCURRENT_WORKERS = 64;
export const CONTENDING_WORKERS = 8;

const throughputRows: readonly {
  kind: "sequential" | "concurrent";
  instances: 1 | 3;
  target: number;
  factories: readonly ContenderFactory[];
}[] = [
  { kind: "sequential", instances: 1, target: 0.95, factories: [FLOOR, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS] },
  { kind: "sequential", instances: 3, target: 0.95, factories: [FLOOR, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS] },
  {
    kind: "concurrent",
    instances: 1,
    target: 1.0,
    factories: [FLOOR, FLOOR_PIPELINED, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS],
  },
  {
    kind: "concurrent",
    instances: 3,
    target: 1.5,
    factories: [FLOOR, FLOOR_PIPELINED, REDLOCK_KIT, REDLOCK_KIT_HANDED, ...PEERS],
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

export async function runThroughputRows(
  ports: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
): Promise<Section[]> {
  const sections: Section[] = [];
  for (const row of throughputRows) {
    const id = `${row.kind}-${row.instances}`;
    const title =
      row.kind === "sequential"
        ? `Sequential lock+unlock, distinct keys, ${row.instances} instance${row.instances > 1 ? "s" : ""}`
        : `Concurrent lock+unlock, ${CONCURRENT_WORKERS} workers on distinct keys, ${row.instances} instance${row.instances > 1 ? "s" : ""}`;
    log(`${title}…`);
    const section = await withContenders(row.factories, ports.slice(0, row.instances), async (contenders) => {
      const samples = await alternate<Sample>(
        contenders.map((contender) => ({
          name: contender.name,
          clients: contender.clients,
          run: (ms) =>
            row.kind === "sequential" ? sequential(contender, ms) : concurrent(contender, CONCURRENT_WORKERS, ms),
        })),
        plan,
      );
      const baseline = (samples[0] as Sample[]).map((sample) => sample.opsPerSec);
      const entries = contenders.map((contender, index) => {
        const mine = samples[index] as Sample[];
        const metrics: Record<string, number> = {
          cpuUsPerOp: median(mine.map((sample) => sample.cpuUsPerOp)),
          cpuRatio: median(
            mine.map((sample, round) => sample.cpuUsPerOp / ((samples[0] as Sample[])[round] as Sample).cpuUsPerOp),
          ),
        };
        if (row.kind === "sequential") {
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
      return { id, title, unit: "lock+unlock/s", baseline: FLOOR.name, target: row.target, entries };
    });
    sections.push(section);
  }
  return sections;
}

export async function runContentionRow(
  ports: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
): Promise<Section> {
  const title = `Contention: ${CONTENDING_WORKERS} workers on one key, ~1 ms critical section, 1 instance`;
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
        },
      );
    });
    return { id: "contention-1", title, unit: "critical sections/s", baseline: FLOOR.name, entries };
  });
}
