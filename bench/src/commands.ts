/**
 * Commands per lock+unlock: counted on the client (every command ioredis sends, so round
 * trips when cycles run one after another) and on the server (INFO commandstats, which also
 * counts the commands a Lua script runs inside).
 */
import type { Redis } from "ioredis";
import type { Contender, ContenderFactory } from "./contenders.js";
import type { CommandCount } from "./results.js";
import { withContenders } from "./rounds.js";

/** The admin client's own commands, not the library's. */
const ADMIN_COMMANDS = new Set(["info", "config|resetstat"]);

function countSent(client: Redis): { count: () => number; restore: () => void } {
  let sent = 0;
  const original = client.sendCommand;
  client.sendCommand = function countingSendCommand(this: Redis, ...args: Parameters<Redis["sendCommand"]>) {
    sent++;
    return original.apply(this, args);
  } as Redis["sendCommand"];
  return {
    count: () => sent,
    restore: () => {
      client.sendCommand = original;
    },
  };
}

/** Calls per command name, from INFO commandstats. */
function parseCommandStats(info: string): Map<string, { calls: number }> {
  const stats = new Map<string, { calls: number }>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const [, name, calls] = match;
    if (name !== undefined && !ADMIN_COMMANDS.has(name)) stats.set(name, { calls: Number(calls) });
  }
  return stats;
}

/** The server process's CPU seconds (user + system), from INFO cpu. */
async function serverCpu(admin: Redis): Promise<number> {
  const info = await admin.info("cpu");
  const read = (field: string) => Number(info.match(new RegExp(`^${field}:([\\d.]+)`, "m"))?.[1] ?? Number.NaN);
  return read("used_cpu_user") + read("used_cpu_sys");
}

async function count(
  contender: Contender,
  admins: readonly Redis[],
  cycles: number,
  tag: string,
): Promise<CommandCount> {
  // connect, load scripts (EVAL once per connection), settle
  for (let i = 0; i < 200; i++) await contender.cycle(`bench:commands-warm:${tag}:${i}`);
  await Promise.all(admins.map((admin) => admin.config("RESETSTAT")));
  const cpuBefore = await Promise.all(admins.map(serverCpu));
  const counters = contender.redisClients.map(countSent);
  try {
    for (let i = 0; i < cycles; i++) await contender.cycle(`bench:commands:${tag}:${i}`);
  } finally {
    for (const counter of counters) counter.restore();
  }
  const cpuAfter = await Promise.all(admins.map(serverCpu));
  const serverCpuUs = cpuAfter.reduce((sum, after, i) => sum + after - (cpuBefore[i] ?? 0), 0) * 1e6;
  const infos = await Promise.all(admins.map((admin) => admin.info("commandstats")));
  const byCommand: Record<string, number> = {};
  let executed = 0;
  for (const info of infos) {
    for (const [name, { calls }] of parseCommandStats(info)) {
      byCommand[name] = (byCommand[name] ?? 0) + calls / cycles / admins.length;
      executed += calls;
    }
  }
  const sent = counters.reduce((sum, counter) => sum + counter.count(), 0);
  return {
    name: contender.name,
    clients: contender.clients,
    instances: admins.length,
    cycles,
    sentPerInstance: sent / cycles / admins.length,
    executedPerInstance: executed / cycles / admins.length,
    serverCpuUsPerInstance: serverCpuUs / cycles / admins.length,
    byCommand,
  };
}

export async function runCommandCounts(
  factories: readonly ContenderFactory[],
  admins: readonly Redis[],
  cycles: number,
  log: (line: string) => void,
): Promise<CommandCount[]> {
  log("Redis commands per lock+unlock…");
  const results: CommandCount[] = [];
  for (const instances of [1, 3]) {
    const mine = admins.slice(0, instances);
    const ports = mine.map((admin) => Number(admin.options.port));
    for (const factory of factories) {
      await withContenders([factory], ports, async ([contender]) => {
        results.push(await count(contender as Contender, mine, cycles, `${instances}:${factory.name}`));
      });
    }
  }
  return results;
}
