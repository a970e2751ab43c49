/**
 * The hot path alone, for `node --cpu-prof`: one contender, sequential or concurrent, for a
 * few seconds, against its own redis-server.
 *
 *   node --cpu-prof --cpu-prof-dir=bench/results bench/dist/bench/src/profile.js redlock-kit sequential 1 5
 *   node bench/dist/bench/src/profile-summary.js bench/results/<file>.cpuprofile
 */
import { startServers } from "../../test/helpers/redis-process.js";
import {
  type ContenderFactory,
  FLOOR,
  FLOOR_ON_SCRIPTS,
  FLOOR_PIPELINED,
  PEERS,
  REDLOCK_KIT,
  REDLOCK_KIT_HANDED,
} from "./contenders.js";
import { concurrent, quantile, sequential } from "./measure.js";

const [name = "redlock-kit", kind = "sequential", instances = "1", seconds = "5"] = process.argv.slice(2);
const factories: ContenderFactory[] = [
  FLOOR,
  FLOOR_PIPELINED,
  FLOOR_ON_SCRIPTS,
  REDLOCK_KIT,
  REDLOCK_KIT_HANDED,
  ...PEERS,
];
const factory = factories.find((candidate) => candidate.name === name);
if (!factory) throw new Error(`unknown contender ${name}; one of: ${factories.map((f) => f.name).join(", ")}`);

const servers = await startServers(Number(instances));
const contender = factory.create(servers.map((server) => server.port));
try {
  await sequential(contender, 500);
  const sample =
    kind === "sequential"
      ? await sequential(contender, Number(seconds) * 1000)
      : await concurrent(contender, 64, Number(seconds) * 1000);
  const latencies = sample.latenciesUs;
  console.log(
    `${name} ${kind} ${instances}: ${Math.round(sample.opsPerSec * Number(seconds))} ops, ${Math.round(sample.opsPerSec)} ops/s, ${sample.cpuUsPerOp.toFixed(1)} CPU µs/op` +
      (latencies
        ? `, p50 ${Math.round(quantile(latencies, 0.5))} µs, p99 ${Math.round(quantile(latencies, 0.99))} µs`
        : ""),
  );
} finally {
  await contender.close();
  await Promise.all(servers.map((server) => server.stop()));
}
