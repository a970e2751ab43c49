import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterEach, expect, it } from "vitest";
import { useRedisServers } from "./helpers/redis-servers.js";

const run = promisify(execFile);
const worker = fileURLToPath(new URL("./fixtures/counter-worker.mjs", import.meta.url));
const servers = useRedisServers(4);

afterEach(async () => {
  await Promise.all(servers.servers.map((server) => server.client().flushall()));
});

/** Runs one counter worker per entry of `libraries`, all on one resource, and checks that no update was lost. */
async function expectNoLostUpdate(libraries: readonly ("ioredis" | "node-redis")[], iterations = 25): Promise<void> {
  expect(existsSync(new URL("../packages/core/dist/index.js", import.meta.url)), "run `pnpm build` first").toBe(true);
  const [a, b, c, witness] = servers.servers;
  const config = {
    ports: [a?.port, b?.port, c?.port],
    witnessPort: witness?.port,
    iterations,
    resource: "counter",
  };
  const results = await Promise.all(
    libraries.map((library) =>
      run(process.execPath, [worker, JSON.stringify({ ...config, library })], { timeout: 150_000 }),
    ),
  );
  const reports = results.map((result) => JSON.parse(result.stdout) as { acquired: number; overlaps: number });
  const witnessClient = witness?.client();
  const total = libraries.length * config.iterations;
  expect(reports.reduce((sum, r) => sum + r.overlaps, 0)).toBe(0);
  expect(reports.reduce((sum, r) => sum + r.acquired, 0)).toBe(total);
  expect(Number(await witnessClient?.get("w:counter"))).toBe(total);
  for (const server of [a, b, c]) expect(await server?.client().dbsize()).toBe(0);
}

it("keeps 8 OS processes × 100 sections one at a time (M1): no lost update on a read-modify-write counter", async () => {
  await expectNoLostUpdate(
    Array.from({ length: 8 }, () => "ioredis" as const),
    100,
  );
}, 180_000);

it("keeps processes on node-redis one at a time too", async () => {
  await expectNoLostUpdate(["node-redis", "node-redis", "node-redis", "node-redis"]);
}, 90_000);

it("keeps processes one at a time when some lock through ioredis and others through node-redis", async () => {
  await expectNoLostUpdate(["ioredis", "node-redis", "ioredis", "node-redis"]);
}, 90_000);
