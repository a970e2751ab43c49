/**
 * One contending process of the between-process rows (process-rows.ts): its own contender (its
 * own Redlock or library object, its own connections), driven by the parent over IPC. Times are
 * epoch milliseconds with sub-millisecond precision (`timeOrigin + now()`), comparable across
 * processes on one machine. A witness counter in a separate Redis counts overlapping sections.
 */
import { Redis } from "ioredis";
import { type Contender, FLOOR, FLOOR_RETAKE_REFERENCE, PEERS, REDLOCK_KIT } from "./contenders.js";
import {
  machineMs,
  type SectionTimes,
  type WorkerCommand,
  type WorkerReport,
  type WorkerSetup,
} from "./process-protocol.js";

const FACTORIES = [FLOOR, FLOOR_RETAKE_REFERENCE, REDLOCK_KIT, ...PEERS];
/** How long after the end of a contention burst a pending acquisition may still finish it. */
const GRACE_MS = 2000;
const send = (report: WorkerReport) => process.send?.(report);

async function main(setup: WorkerSetup): Promise<void> {
  const factory = FACTORIES.find((f) => f.name === setup.contender);
  if (!factory) throw new Error(`unknown contender ${setup.contender}`);
  const contender: Contender = factory.create(setup.ports);
  const witness = new Redis({ host: "127.0.0.1", port: setup.witnessPort });
  const witnessKey = `witness:${setup.key}`;
  await Promise.all([witness.ping(), ...contender.redisClients.map((client) => client.ping())]);

  let overlaps = 0;
  let failed = 0;
  /** One acquisition, a ~1 ms critical section checked by the witness, one release. */
  const section = async (): Promise<SectionTimes | undefined> => {
    const askedAt = machineMs();
    let release: () => Promise<unknown>;
    try {
      release = await contender.acquireWaiting(setup.key, setup.poll);
    } catch {
      failed++;
      return undefined;
    }
    const acquiredAt = machineMs();
    if ((await witness.incr(witnessKey)) > 1) overlaps++;
    await new Promise((resolve) => setTimeout(resolve, 1));
    await witness.decr(witnessKey);
    const releaseCalledAt = machineMs();
    await release();
    return { askedAt, acquiredAt, releaseCalledAt, releasedAt: machineMs() };
  };

  process.on("message", (command: WorkerCommand) => {
    void (async () => {
      if (command.kind === "close") {
        await contender.close();
        witness.disconnect();
        process.exit(0);
      }
      const sections: SectionTimes[] = [];
      const cpu = process.cpuUsage();
      overlaps = 0;
      failed = 0;
      let reported = false;
      const report = () => {
        if (reported) return;
        reported = true;
        const used = process.cpuUsage(cpu);
        send({ kind: "sections", sections: [...sections], overlaps, failed, cpuUs: used.user + used.system });
      };
      if (command.kind === "once") {
        const times = await section();
        if (times) sections.push(times);
      } else {
        // a library whose votes split may wait on one acquisition for seconds: the round ends anyway
        const late = setTimeout(report, command.untilMs + GRACE_MS - machineMs());
        while (machineMs() < command.untilMs && !reported) {
          const times = await section();
          if (times && !reported) sections.push(times);
        }
        clearTimeout(late);
      }
      report();
    })();
  });
  send({ kind: "ready" });
}

main(JSON.parse(process.argv[2] ?? "{}") as WorkerSetup).catch((error) => {
  console.error(error);
  process.exit(1);
});
