/** Self time by function (and by package) in a .cpuprofile written by `node --cpu-prof`. */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [file, top = "30"] = process.argv.slice(2);
if (!file) throw new Error("usage: profile-summary <file.cpuprofile> [top]");
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => {
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
});
const total = [...selfUs.values()].reduce((sum, us) => sum + us, 0);

function where(url: string): string {
  if (url === "") return "(native/vm)";
  if (url.startsWith("node:")) return "node:internal";
  const pnpm = url.match(/node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (pnpm) return pnpm[1] as string;
  const local = url.match(/packages\/([^/]+)\//);
  if (local) return `@redlock-kit/${local[1]}`;
  if (url.includes("/bench/")) return "bench";
  return url;
}

const byFunction = new Map<string, number>();
const byPackage = new Map<string, number>();
for (const [id, us] of selfUs) {
  const frame = (byId.get(id) as ProfileNode).callFrame;
  const pkg = where(frame.url);
  const file = frame.url.split("/").pop() ?? "";
  const key = `${frame.functionName || "(anonymous)"}  ${pkg} ${file}:${frame.lineNumber + 1}`;
  byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
}
const pct = (us: number) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
console.log(`total ${(total / 1000).toFixed(0)} ms sampled\n\nby package:`);
for (const [pkg, us] of [...byPackage].sort((a, b) => b[1] - a[1])) console.log(`${pct(us)}  ${pkg}`);
console.log("\nby function (self time):");
for (const [key, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, Number(top))) {
  console.log(`${pct(us)}  ${key}`);
}
