import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect, it } from "vitest";
import { useRedisServers } from "./helpers/redis-servers.js";

const run = promisify(execFile);
const worker = fileURLToPath(new URL("./fixtures/counter-worker.mjs", import.meta.url));
const servers = useRedisServers(4);

it("keeps several OS processes one at a time: no lost update on a read-modify-write counter", async () => {
  expect(existsSync(new URL("../packages/core/dist/index.js", import.meta.url)), "run `pnpm build` first").toBe(true);
  const [a, b, c, witness] = servers.servers;
  const config = {
    ports: [a?.port, b?.port, c?.port],
    witnessPort: witness?.port,
    iterations: 25,
    resource: "counter",
  };
  const processes = 4;
  const results = await Promise.all(
    Array.from({ length: processes }, () =>
      run(process.execPath, [worker, JSON.stringify(config)], { timeout: 60_000 }),
    ),
  );
  const reports = results.map((result) => JSON.parse(result.stdout) as { acquired: number; overlaps: number });
  const witnessClient = witness?.client();
  expect(reports.reduce((sum, r) => sum + r.overlaps, 0)).toBe(0);
  expect(reports.reduce((sum, r) => sum + r.acquired, 0)).toBe(processes * config.iterations);
  expect(Number(await witnessClient?.get("w:counter"))).toBe(processes * config.iterations);
  for (const server of [a, b, c]) expect(await server?.client().dbsize()).toBe(0);
}, 90_000);
