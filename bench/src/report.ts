/** Markdown tables of a run: what `pnpm bench` prints and bench/README.md quotes. */
import { median } from "./measure.js";
import type { CommandCount, Entry, Results, Section, Soak } from "./results.js";

export const OURS = "redlock-kit";

const int = (value: number) => (Number.isFinite(value) ? Math.round(value).toLocaleString("en-US") : "–");
const x = (value: number) => (Number.isFinite(value) ? `${value.toFixed(2)}x` : "–");
const num = (value: number, digits = 2) => (Number.isFinite(value) ? value.toFixed(digits) : "–");

function ratio(entry: Entry): string {
  const { median, min, max } = entry.ratio;
  return `**${x(median)}** (${num(min)}–${num(max)})`;
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** µs as ms with sub-ms precision. */
const ms = (us: number) => (Number.isFinite(us) ? (us / 1000).toFixed(us < 10_000 ? 3 : 1) : "–");

function queueTable(section: Section): string {
  const header = [
    "",
    "clients; how it waits",
    section.unit,
    `× ${section.baseline} (median, min–max)`,
    "gap p50 ms",
    "gap p99 ms",
    "unlock called → next acquired p50 / p99 ms",
    "hand-offs",
    "acquired before unlock resolved",
    "fairness: sections min/max",
    "fairness: mean wait min/max",
    "violations",
  ];
  const rows = section.entries.map((entry) => {
    const m = entry.metrics;
    return [
      entry.name,
      entry.clients,
      int(entry.score),
      ratio(entry),
      ms(m.gapP50Us ?? Number.NaN),
      ms(m.gapP99Us ?? Number.NaN),
      `${ms(m.gapFromCallP50Us ?? Number.NaN)} / ${ms(m.gapFromCallP99Us ?? Number.NaN)}`,
      int(m.handOffs ?? Number.NaN),
      `${num((m.earlyShare ?? Number.NaN) * 100, 0)} %`,
      num(m.fairness ?? Number.NaN),
      num(m.waitFairness ?? Number.NaN),
      String(m.overlaps ?? "–"),
    ];
  });
  return `#### ${section.title}\n\n${table(header, rows)}`;
}

function isPollingPeer(entry: Entry): boolean {
  return entry.name !== OURS && !entry.name.startsWith("floor") && !entry.name.startsWith(`${OURS} `);
}

/** Issue 8's targets in each queue row, for every redlock-kit entry: met or missed, never hidden. */
export function queueTargetLines(sections: readonly Section[]): string[] {
  const lines: string[] = [];
  for (const section of sections) {
    if (!section.id.startsWith("queue")) continue;
    const floor = section.entries.find((entry) => entry.name === section.baseline);
    const peers = section.entries.filter(isPollingPeer);
    const best = peers.reduce<Entry | undefined>(
      (found, peer) =>
        found && (found.metrics.gapP50Us ?? Infinity) <= (peer.metrics.gapP50Us ?? Infinity) ? found : peer,
      undefined,
    );
    // the polling floor and the polling peers; their median is the bar (one value alone is noisy)
    const polling = section.entries
      .filter((entry) => !entry.name.startsWith(OURS))
      .map((entry) => entry.metrics.waitFairness ?? Number.NaN);
    const pollingFairness = median(polling);
    const verdict = (ok: boolean) => (ok ? "met" : "MISSED");
    for (const ours of section.entries.filter((entry) => entry.name.startsWith(OURS))) {
      const m = ours.metrics;
      const gap = m.gapP50Us ?? Number.NaN;
      const bestGap = best?.metrics.gapP50Us ?? Number.NaN;
      const fromCall = m.gapFromCallP50Us ?? Number.NaN;
      const bestFromCall = best?.metrics.gapFromCallP50Us ?? Number.NaN;
      const parts = [
        `gap p50 ${ms(gap)} ms vs ≤ 0.500 ms: ${verdict(gap <= 500)}`,
        `vs best polling peer ${best ? `${best.name} ${ms(bestGap)} ms` : "–"}: ${num(gap / bestGap, 3)} of it vs ≤ 0.200: ${verdict(gap <= bestGap / 5)}`,
        `from unlock called (robust when the next holder is told before the releaser): p50 ${ms(fromCall)} ms, ${num(fromCall / bestFromCall, 3)} of ${best?.name ?? "–"}'s ${ms(bestFromCall)} ms: ${verdict(fromCall <= 500 && fromCall <= bestFromCall / 5)}`,
        `critical sections/s ${x(ours.ratio.median)} the polling floor vs ≥ ${x(section.target ?? Number.NaN)}: ${verdict(ours.ratio.median >= (section.target ?? Number.NaN))}`,
        `fairness (mean wait min/max) ${num(m.waitFairness ?? Number.NaN)} vs polling median ${num(pollingFairness)} (floor ${num(floor?.metrics.waitFairness ?? Number.NaN)}, worst ${num(Math.min(...polling))}, best ${num(Math.max(...polling))}): ${verdict((m.waitFairness ?? 0) >= pollingFairness)}`,
        `sections min/max ${num(m.fairness ?? Number.NaN)}`,
        `violations ${m.overlaps ?? "–"}: ${verdict(m.overlaps === 0)}`,
      ];
      lines.push(`${section.title}, ${ours.name}: ${parts.join("; ")}`);
    }
  }
  return lines;
}

/** The between-process rows: throughput, hand-over gaps, fairness across processes, violations. */
function processTable(section: Section): string {
  const header = ["", "how", section.unit, `× ${section.baseline} (median, min–max)`];
  header.push("gap p50 µs", "gap p99 µs", "unlock called → next p50 µs", "fairness min/max", "client CPU µs/section");
  // where a section's time goes: the hold (the witness's round trips and 1 ms sleep, no library
  // code) and the release, both timed in the holder's process, and how often the key changed process
  header.push("hold µs (mean)", "unlock µs (mean)", "hand-overs %", "overlaps", "failed");
  const rows = section.entries.map((entry) => {
    const m = entry.metrics;
    return [
      entry.name,
      entry.clients,
      int(entry.score),
      ratio(entry),
      int(m.gapP50Us ?? Number.NaN),
      int(m.gapP99Us ?? Number.NaN),
      int(m.gapFromCallP50Us ?? Number.NaN),
      num(m.fairness ?? Number.NaN),
      int(m.cpuUsPerSection ?? Number.NaN),
      int(m.holdMeanUs ?? Number.NaN),
      int(m.releaseMeanUs ?? Number.NaN),
      int((m.handOversPerSection ?? Number.NaN) * 100),
      String(m.overlaps ?? "–"),
      String(m.failed ?? "–"),
    ];
  });
  return `#### ${section.title}\n\n${table(header, rows)}`;
}

function sectionTable(section: Section): string {
  if (section.id.startsWith("processes")) return processTable(section);
  if (section.id.startsWith("queue")) return queueTable(section);
  const contention = section.id.startsWith("contention");
  const http = section.id.startsWith("http");
  // the rows that price a feature: sequential, plus the feature's entry × plain redlock-kit
  const cost = /^(fencing|tracing)-/.test(section.id);
  const latencies = cost || section.id.startsWith("sequential");
  const header = ["", "clients", section.unit, `× ${section.baseline} (median, min–max)`];
  if (contention) header.push("gap p50 µs", "gap p99 µs", "fairness min/max", "overlaps", "same holder next");
  else if (http)
    header.push("× floor middleware (same rounds)", "latency p50 ms", "latency p99 ms", "server CPU µs/2xx", "non-2xx");
  else if (latencies) header.push("p50 µs", "p99 µs", "client CPU µs/op", "CPU × floor");
  else header.push("client CPU µs/op", "CPU × floor");
  if (cost) header.push(`× ${OURS} (same rounds)`, `CPU × ${OURS}`);
  const rows = section.entries.map((entry) => {
    const m = entry.metrics;
    const cells = [entry.name, entry.clients, int(entry.score), ratio(entry)];
    if (contention) {
      cells.push(int(m.gapP50Us ?? Number.NaN), int(m.gapP99Us ?? Number.NaN));
      cells.push(num(m.fairness ?? Number.NaN), String(m.overlaps ?? "–"), num(m.sameHolder ?? Number.NaN));
    } else if (http) {
      cells.push(x(m.vsFloorMiddleware ?? Number.NaN), num(m.p50Ms ?? Number.NaN, 1), num(m.p99Ms ?? Number.NaN, 1));
      cells.push(int(m.serverCpuUs ?? Number.NaN), int(m.non2xx ?? Number.NaN));
    } else {
      if (latencies) cells.push(int(m.p50Us ?? Number.NaN), int(m.p99Us ?? Number.NaN));
      cells.push(int(m.cpuUsPerOp ?? Number.NaN), x(m.cpuRatio ?? Number.NaN));
    }
    if (cost) cells.push(x(m.vsOurs ?? Number.NaN), x(m.cpuVsOurs ?? Number.NaN));
    return cells;
  });
  const note = section.note === undefined ? "" : `\n\n${section.note}`;
  return `#### ${section.title}\n\n${table(header, rows)}${note}`;
}

function commandsTable(counts: readonly CommandCount[]): string {
  const rows = counts.map((c) => [
    c.name,
    String(c.instances),
    num(c.sentPerInstance),
    num(c.executedPerInstance),
    num(c.serverCpuUsPerInstance, 1),
    Object.entries(c.byCommand)
      .filter(([, n]) => n >= 0.005)
      .map(([name, n]) => `${name} ${num(n)}`)
      .join(", "),
  ]);
  return `#### Redis commands per lock+unlock, per instance (${int(counts[0]?.cycles ?? 0)} sequential cycles)\n\n${table(
    ["", "instances", "sent (round trips)", "executed (commandstats)", "server CPU µs", "executed by command"],
    rows,
  )}`;
}

function soakTable(soaks: readonly Soak[]): string {
  const show = (handles: Readonly<Record<string, number>>) =>
    Object.entries(handles)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([type, n]) => `${type} ${n}`)
      .join(", ");
  const rows = soaks.map((s) => [
    s.name,
    int(s.cycles),
    `${int(s.heapBeforeKb)} → ${int(s.heapAfterKb)}`,
    show(s.handlesBefore),
    show(s.handlesAfter),
    String(s.keysLeft),
  ]);
  return `#### Heap and active handles (${64} workers, after a full GC)\n\n${table(
    ["", "cycles", "heap KB before → after", "handles before", "handles after", "keys left"],
    rows,
  )}`;
}

/** One line per target of issues 7 and 17: met, or missed by how much. */
export function targetLines(sections: readonly Section[]): string[] {
  const lines: string[] = [];
  for (const section of sections) {
    const ours = section.entries.find((entry) => entry.name === OURS);
    // the queue rows have their own list (issue 8)
    if (!ours || section.id.startsWith("queue")) continue;
    if (section.id === "http-express") {
      lines.push(...expressTargetLines(section, ours));
      continue;
    }
    if (section.target !== undefined) {
      const got = ours.ratio.median;
      lines.push(
        `${section.title}: ${got.toFixed(3)}x vs target ≥ ${x(section.target)}: ${verdictOf(got, section.target)}`,
      );
    }
    const peers = section.entries.filter(
      (entry) => entry.name !== OURS && !entry.name.startsWith("floor") && !entry.name.startsWith(`${OURS} `),
    );
    const ahead = peers.filter((peer) => peer.ratio.median > ours.ratio.median && !isRoute(peer));
    if (peers.some((peer) => !isRoute(peer))) {
      lines.push(
        ahead.length === 0
          ? `${section.title}: ahead of every peer`
          : `${section.title}: BEHIND ${ahead.map((peer) => `${peer.name} (${x(peer.ratio.median)})`).join(", ")}`,
      );
    }
  }
  return lines;
}

function verdictOf(got: number, target: number): string {
  if (got >= target) return "met";
  return `MISSED by ${(target - got).toFixed(3)} (${(((target - got) / target) * 100).toFixed(1)}% short)`;
}

/**
 * Issue 17's Express target: at least the hand-written floor middleware's route and ahead of the
 * node-redlock middleware, each taken as a ratio to the floor middleware in the same rounds.
 */
function expressTargetLines(section: Section, ours: Entry): string[] {
  const vsFloor = (entry: Entry) => entry.metrics.vsFloorMiddleware ?? Number.NaN;
  const got = vsFloor(ours);
  const lines = [
    `${section.title}: ${got.toFixed(3)}x the floor middleware (same rounds) vs target ≥ 1.00x: ${verdictOf(got, 1)}`,
  ];
  const peer = section.entries.find((entry) => entry.name.startsWith("node-redlock"));
  if (peer) {
    const place = got > vsFloor(peer) ? "ahead of" : "BEHIND";
    lines.push(`${section.title}: ${place} ${peer.name} (${x(vsFloor(peer))} the floor middleware)`);
  }
  return lines;
}

/** HTTP reference routes (no lock, a pass-through middleware): not peers. */
function isRoute(entry: Entry): boolean {
  return entry.name.startsWith("no lock") || entry.name.startsWith("pass-through");
}

/** Every section's ratios in one table, one column per library. */
function summaryTable(sections: readonly Section[]): string {
  const names: string[] = [];
  for (const section of sections) {
    for (const entry of section.entries) {
      if (entry.name !== section.baseline && !names.includes(entry.name)) names.push(entry.name);
    }
  }
  const rows = sections.map((section) => [
    `${section.title} (× ${section.baseline})`,
    ...names.map((name) => {
      const entry = section.entries.find((e) => e.name === name);
      if (!entry) return "";
      return name === OURS ? `**${x(entry.ratio.median)}**` : x(entry.ratio.median);
    }),
    section.target === undefined ? "" : `≥ ${x(section.target)}`,
  ]);
  return table(["row", ...names, "target"], rows);
}

export function markdown(results: Results): string {
  const m = results.machine;
  const parts = [
    `### redlock-kit benchmark (${results.mode} run)`,
    `${m.date} · ${m.cpus} × ${m.cpuModel} · Node ${m.node} · redis-server ${m.redisServer} · ${m.platform} · commit ${m.commit}`,
    `Ratios are the median over ${results.plan.rounds} alternating rounds (contention ${results.plan.contentionRounds}, queue ${results.plan.queueRounds ?? "–"}, HTTP ${results.plan.httpRounds}) of (score ÷ the baseline's score in the same round).`,
    "#### Ratios to the baseline",
    summaryTable(results.sections),
  ];
  const targets = targetLines(results.sections);
  if (targets.length > 0) parts.push("#### Targets (issues 7 and 17)", targets.map((line) => `- ${line}`).join("\n"));
  const queueLines = queueTargetLines(results.sections);
  if (queueLines.length > 0) {
    parts.push("#### Targets (issue 8, queue rows)", queueLines.map((line) => `- ${line}`).join("\n"));
  }
  parts.push(...results.sections.map(sectionTable));
  if (results.commands.length > 0) parts.push(commandsTable(results.commands));
  if (results.soak.length > 0) parts.push(soakTable(results.soak));
  if (results.notes.length > 0) parts.push(results.notes.map((note) => `- ${note}`).join("\n"));
  return `${parts.join("\n\n")}\n`;
}
