/**
 * Rows that price one feature of redlock-kit: sequential lock+unlock on distinct keys by plain
 * redlock-kit and by redlock-kit with the feature, alternated with the floor in the same rounds.
 * Each entry is a ratio to the floor, as in the sequential rows; the feature's entry is also a
 * ratio to plain redlock-kit in the same rounds, which is the feature's cost.
 *
 * - fencing (issue 20): `fencing: true`, a second round trip per acquisition.
 * - tracing (issue 22): a no-op subscriber on every tracing channel while the entry runs, so that
 *   plain redlock-kit, running in the same rounds with nobody subscribed, shows the unsubscribed path.
 */
import { tracingChannels } from "@redlock-kit/core";
import { type Contender, type ContenderFactory, FLOOR, REDLOCK_KIT, REDLOCK_KIT_FENCED } from "./contenders.js";
import { throughputEntries } from "./core-rows.js";
import { median, type Sample, sequential } from "./measure.js";
import type { Entry, Section } from "./results.js";
import { alternate, type RoundPlan, ratios, withContenders } from "./rounds.js";

export const COST_ROWS = ["fencing", "tracing"] as const;
export type CostRow = (typeof COST_ROWS)[number];

interface Variant {
  readonly factory: ContenderFactory;
  /** Overrides the factory's name and adds to its clients text. */
  readonly name?: string;
  readonly how?: string;
  /** Set up before each of its bursts; returns the teardown, run after the burst. */
  readonly during?: () => () => void;
}

const NO_OP = { start() {}, end() {}, asyncStart() {}, asyncEnd() {}, error() {} };

/** Whether a tracing subscriber has been attached in this process yet. */
let subscribedOnce = false;

/** A no-op subscriber on every event of every tracing channel, until the returned function is called. */
function subscribeEverywhere(): () => void {
  subscribedOnce = true;
  const channels = Object.values(tracingChannels);
  for (const channel of channels) channel.subscribe(NO_OP);
  return () => {
    for (const channel of channels) channel.unsubscribe(NO_OP);
  };
}

/** The floor, plain redlock-kit (always second: the feature's entry is divided by it), the feature. */
const VARIANTS: Record<CostRow, readonly Variant[]> = {
  fencing: [{ factory: FLOOR }, { factory: REDLOCK_KIT }, { factory: REDLOCK_KIT_FENCED }],
  tracing: [
    { factory: FLOOR },
    { factory: REDLOCK_KIT, how: "nobody subscribed to its tracing channels" },
    {
      factory: REDLOCK_KIT,
      name: "redlock-kit (tracing subscriber)",
      how: "a no-op subscriber on every event of every tracing channel while it runs",
      during: subscribeEverywhere,
    },
  ],
};

const TITLES: Record<CostRow, string> = {
  fencing: "Cost of fencing: sequential lock+unlock, distinct keys",
  tracing: "Cost of tracing channels: sequential lock+unlock, distinct keys",
};

/**
 * What the tracing channels cost one lock+unlock when nobody subscribes: `acquire()` and `unlock()`
 * each read one channel's `hasSubscribers` and take the untraced path. In ns of process CPU per
 * pair of reads (CPU, not wall time: on a shared machine a descheduled loop would count the other
 * processes' time), the median of 5 timings of 5 million pairs.
 */
function unsubscribedGuardNs(): number {
  const pairs = 5_000_000;
  const timings: number[] = [];
  let subscribed = 0;
  for (let repeat = 0; repeat < 5; repeat++) {
    const cpu = process.cpuUsage();
    for (let i = 0; i < pairs; i++) {
      if (tracingChannels.acquire.hasSubscribers) subscribed++;
      if (tracingChannels.release.hasSubscribers) subscribed++;
    }
    const { user, system } = process.cpuUsage(cpu);
    timings.push(((user + system) * 1000) / pairs);
  }
  // also keeps the reads from being optimised away
  if (subscribed > 0) throw new Error("a tracing subscriber was left behind by another row");
  return median(timings);
}

/** The feature's entries as ratios to plain redlock-kit (the second entry) in the same rounds. */
function withCostOverOurs(entries: Entry[], samples: readonly Sample[][]): Entry[] {
  const ours = samples[1] as Sample[];
  return entries.map((entry, index) => {
    if (index < 2) return entry;
    const mine = samples[index] as Sample[];
    const vsOurs = ratios(
      mine.map((sample) => sample.opsPerSec),
      ours.map((sample) => sample.opsPerSec),
    ).median;
    const cpuVsOurs = median(mine.map((sample, round) => sample.cpuUsPerOp / (ours[round] as Sample).cpuUsPerOp));
    return { ...entry, metrics: { ...entry.metrics, vsOurs, cpuVsOurs } };
  });
}

export async function runCostRows(
  rows: readonly CostRow[],
  ports: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
): Promise<Section[]> {
  const sections: Section[] = [];
  // Once a subscriber has traced calls and gone, the same `hasSubscribers` reads are slower (about
  // 3 ns → 100 ns here): the unsubscribed path is timed before the first subscriber, and after each row.
  const neverSubscribedNs = rows.includes("tracing") && !subscribedOnce ? unsubscribedGuardNs() : Number.NaN;
  for (const row of rows) {
    const variants = VARIANTS[row];
    for (const instances of [1, 3]) {
      const title = `${TITLES[row]}, ${instances} instance${instances > 1 ? "s" : ""}`;
      log(`${title}…`);
      const factories = variants.map((variant) => variant.factory);
      const section = await withContenders(factories, ports.slice(0, instances), async (created) => {
        const contenders: Contender[] = created.map((contender, index) => {
          const variant = variants[index] as Variant;
          const clients = variant.how ? `${contender.clients}; ${variant.how}` : contender.clients;
          return { ...contender, name: variant.name ?? contender.name, clients };
        });
        const samples = await alternate<Sample>(
          contenders.map((contender, index) => ({
            name: contender.name,
            clients: contender.clients,
            run: async (ms) => {
              const teardown = (variants[index] as Variant).during?.();
              try {
                return await sequential(contender, ms);
              } finally {
                teardown?.();
              }
            },
          })),
          plan,
        );
        const entries = withCostOverOurs(throughputEntries(contenders, samples), samples);
        const result: Section = {
          id: `${row}-${instances}`,
          title,
          unit: "lock+unlock/s",
          baseline: FLOOR.name,
          entries,
        };
        if (row !== "tracing") return result;
        const afterNs = unsubscribedGuardNs();
        const oursCpuUs = (entries[1] as Entry).metrics.cpuUsPerOp ?? Number.NaN;
        const share = (ns: number) => `${((ns / 1000 / oursCpuUs) * 100).toPrecision(2)} %`;
        const note = `Nobody subscribed: per lock+unlock, redlock-kit reads \`hasSubscribers\` on the acquire and release channels and takes the untraced path. Those two reads took ${neverSubscribedNs.toFixed(1)} ns of CPU (${share(neverSubscribedNs)} of redlock-kit's client CPU per lock+unlock) before any subscriber in this process, and ${afterNs.toFixed(1)} ns (${share(afterNs)}) after the subscriber's bursts.`;
        return { ...result, note };
      });
      sections.push(section);
    }
  }
  return sections;
}
