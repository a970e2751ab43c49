/**
 * A process that waited for a lock while one instance was down, and closed its own clients but not
 * its Redlock, exits by itself: the hand-over subscriber connection never holds it (docs/waiting.md,
 * "Leaks"). The child (fixtures/exits-alone.mjs) imports the BUILT core.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { freePort, useRedisServers } from "./helpers/redis-servers.js";
import { requireBuiltCore } from "./helpers/workers.js";

const run = promisify(execFile);
const script = fileURLToPath(new URL("./fixtures/exits-alone.mjs", import.meta.url));
const servers = useRedisServers(2);

beforeAll(() => requireBuiltCore());

/** What the child printed: `done` once its work is done, `alive` (its active resources) if it did not exit then. */
async function runChild(config: { library: string; wait: boolean }) {
  const ports = [...servers.servers.map((server) => server.port), await freePort()];
  const { stdout } = await run(process.execPath, [script, JSON.stringify({ ports, ...config })], {
    timeout: 60_000,
  }).catch((error: { stdout?: string; code?: number }) => ({ stdout: `${error.stdout ?? ""}{"code":${error.code}}` }));
  return stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe("a process that waited while an instance was down, without quit()", () => {
  for (const library of ["node-redis", "ioredis"]) {
    it(`exits by itself once its own ${library} clients are closed (no lock call waited)`, async () => {
      expect(await runChild({ library, wait: false })).toEqual([{ done: true }]);
    }, 60_000);

    it(`exits by itself once its own ${library} clients are closed (a call waited: hand-over subscriber)`, async () => {
      expect(await runChild({ library, wait: true })).toEqual([{ done: true }]);
    }, 60_000);
  }
});
