/** Heap and active handles after many cycles: a leak shows as growth that a full GC does not take back. */
import type { Redis } from "ioredis";
import type { Contender, ContenderFactory } from "./contenders.js";
import type { Soak } from "./results.js";
import { withContenders } from "./rounds.js";

const WORKERS = 64;
const gc = (globalThis as { gc?: () => void }).gc;

async function cycles(contender: Contender, total: number, tag: string): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const n = next++;
      await contender.cycle(`bench:soak:${tag}:${n}`);
    }
  };
  await Promise.all(Array.from({ length: WORKERS }, worker));
}

function settledHeapKb(): number {
  gc?.();
  gc?.();
  return Math.round(process.memoryUsage().heapUsed / 1024);
}

function handles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}

export async function runSoak(
  factories: readonly ContenderFactory[],
  admin: Redis,
  total: number,
  log: (line: string) => void,
): Promise<Soak[]> {
  log(`Heap and handles after ${total.toLocaleString("en-US")} cycles…`);
  const results: Soak[] = [];
  for (const factory of factories) {
    await withContenders([factory], [Number(admin.options.port)], async ([contender]) => {
      const c = contender as Contender;
      await cycles(c, Math.min(5000, total), `warm:${factory.name}`);
      const heapBeforeKb = settledHeapKb();
      const handlesBefore = handles();
      await cycles(c, total, factory.name);
      // let timers that were cleared leave the list before counting
      await new Promise((resolve) => setImmediate(resolve));
      const heapAfterKb = settledHeapKb();
      results.push({
        name: c.name,
        clients: c.clients,
        cycles: total,
        heapBeforeKb,
        heapAfterKb,
        handlesBefore,
        handlesAfter: handles(),
        keysLeft: await admin.dbsize(),
      });
    });
  }
  return results;
}
