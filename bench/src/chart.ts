/** An SVG bar chart of every ratio in a run, drawn here so that no external service is involved. */
import { OURS } from "./report.js";
import type { Results } from "./results.js";

const WIDTH = 960;
const LABEL = 330;
const RIGHT = 110;
const BAR = 13;
const BAR_GAP = 3;
const GROUP_GAP = 32;
const PALETTE = [
  "#d62728",
  "#ff9896",
  "#1f77b4",
  "#aec7e8",
  "#2ca02c",
  "#9467bd",
  "#8c564b",
  "#7f7f7f",
  "#bcbd22",
  "#e377c2",
  "#17becf",
];

const escapeXml = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

export function chart(results: Results): string {
  const colors = new Map<string, string>([[OURS, PALETTE[0] as string]]);
  const colorOf = (name: string) => {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length] as string);
    return colors.get(name) as string;
  };
  const maxRatio = Math.max(
    1.5,
    ...results.sections.flatMap((section) => section.entries.map((entry) => entry.ratio.median)),
    ...results.sections.map((section) => section.target ?? 0),
  );
  // whiskers beyond the scale are clipped: the medians decide it
  const scaleMax = Math.ceil(maxRatio * 4) / 4 + 0.25;
  const plotWidth = WIDTH - LABEL - RIGHT;
  const xOf = (ratio: number) => LABEL + (Math.min(Math.max(0, ratio), scaleMax) / scaleMax) * plotWidth;

  const body: string[] = [];
  let y = 92;
  for (const section of results.sections) {
    const entries = section.entries.filter((entry) => entry.name !== section.baseline);
    body.push(
      `<text x="10" y="${y - 6}" class="group">${escapeXml(section.title)} (× ${escapeXml(section.baseline)})</text>`,
    );
    const top = y;
    for (const entry of entries) {
      const ratio = entry.ratio.median;
      const width = Math.max(1, xOf(ratio) - LABEL);
      const bold = entry.name === OURS ? ' font-weight="bold"' : "";
      body.push(`<text x="${LABEL - 8}" y="${y + BAR - 3}" text-anchor="end"${bold}>${escapeXml(entry.name)}</text>`);
      body.push(
        `<rect x="${LABEL}" y="${y}" width="${width.toFixed(1)}" height="${BAR}" fill="${colorOf(entry.name)}"><title>${escapeXml(
          `${entry.name}: ${ratio.toFixed(2)}x (${entry.ratio.min.toFixed(2)}–${entry.ratio.max.toFixed(2)})`,
        )}</title></rect>`,
      );
      // the spread over rounds
      body.push(
        `<line x1="${xOf(entry.ratio.min).toFixed(1)}" x2="${xOf(entry.ratio.max).toFixed(1)}" y1="${y + BAR / 2}" y2="${y + BAR / 2}" class="spread"/>`,
      );
      body.push(
        `<text x="${(xOf(ratio) + 5).toFixed(1)}" y="${y + BAR - 3}" class="value"${bold}>${ratio.toFixed(2)}x</text>`,
      );
      y += BAR + BAR_GAP;
    }
    if (section.target !== undefined) {
      const tx = xOf(section.target).toFixed(1);
      body.push(`<line x1="${tx}" x2="${tx}" y1="${top - 3}" y2="${y}" class="target"/>`);
      body.push(
        `<text x="${tx}" y="${y + 9}" text-anchor="middle" class="target-label">target ${section.target}x</text>`,
      );
    }
    y += GROUP_GAP;
  }
  const height = y + 10;
  const axis: string[] = [];
  for (let tick = 0; tick <= scaleMax + 1e-9; tick += 0.25) {
    const tx = xOf(tick).toFixed(1);
    const major = Math.abs(tick - Math.round(tick * 2) / 2) < 1e-9;
    axis.push(`<line x1="${tx}" x2="${tx}" y1="62" y2="${height - 10}" class="${tick === 1 ? "one" : "grid"}"/>`);
    if (major) axis.push(`<text x="${tx}" y="58" text-anchor="middle">${tick.toFixed(1)}x</text>`);
  }
  const m = results.machine;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="12">
<style>
.group { font-weight: bold; font-size: 12px; }
.grid { stroke: #e5e5e5; }
.one { stroke: #333; stroke-dasharray: 4 3; }
.spread { stroke: #000; stroke-opacity: 0.35; }
.value { paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.target { stroke: #d62728; stroke-width: 2; stroke-dasharray: 2 2; }
.target-label { fill: #d62728; font-size: 10px; }
</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="18" font-size="14" font-weight="bold">redlock-kit vs the raw-ioredis floor and peers: ratios in the same run (higher is better)</text>
<text x="10" y="34" font-size="10" fill="#555">${escapeXml(`${m.date} · ${m.cpus} CPUs · Node ${m.node} · redis-server ${m.redisServer} · ${results.mode} run · median over the alternating rounds (${results.plan.rounds} for throughput, ${results.plan.queueRounds ?? "–"} for the queue rows), whiskers min–max`)}</text>
${axis.join("\n")}
${body.join("\n")}
</svg>
`;
}
