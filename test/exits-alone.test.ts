/**
 * A process that waited for a lock while one instance was down, and closed its own clients but not
 * its Redlock, exits by itself: the hand-over subscriber connection never holds it (docs/waiting.md,
 * "Leaks"). Nor does it once `quit()` closed that connection between two of its attempts (ioredis,
 * node-redis) or while a node-redis Sentinel's could not connect, nor a client Redlock created
 * itself. The children (fixtures/exits-alone.mjs, quit-reconnecting.mjs,
 * quit-reconnecting-node-redis.mjs, quit-connecting-node-redis-sentinel.mjs, quit-owned.mjs) import
 * the BUILT core.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { freePort, startSentinel, startServer, useRedisServers } from "./helpers/redis.js";
import { requireBuiltCore } from "./helpers/workers.js";

const run = promisify(execFile);
const script = fileURLToPath(new URL("./fixtures/exits-alone.mjs", import.meta.url));
const quitReconnecting = fileURLToPath(new URL("./fixtures/quit-reconnecting.mjs", import.meta.url));
const quitOwned = fileURLToPath(new URL("./fixtures/quit-owned.mjs", import.meta.url));
const quitReconnectingNodeRedis = fileURLToPath(
  new URL("./fixtures/quit-reconnecting-node-redis.mjs", import.meta.url),
);
const quitConnectingNodeRedisSentinel = fileURLToPath(
  new URL("./fixtures/quit-connecting-node-redis-sentinel.mjs", import.meta.url),
);
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

/**
 * What a quit fixture printed (one JSON line), with its exit code and signal if it failed: a wait
 * of its own that timed out (bounded-wait.mjs) printed what never came (`missing`) and what it saw.
 */
async function printed(file: string, config: object, timeout: number): Promise<Record<string, unknown>> {
  const { stdout, failed } = await run(process.execPath, [file, JSON.stringify(config)], { timeout }).then(
    ({ stdout }) => ({ stdout, failed: {} }),
    (error: { stdout?: string; code?: number; signal?: string }) => ({
      stdout: error.stdout ?? "",
      failed: { code: error.code, signal: error.signal },
    }),
  );
  return { ...failed, ...(stdout.trim() === "" ? {} : JSON.parse(stdout)) };
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

describe("quit() while an ioredis hand-over subscriber is between two connection attempts", () => {
  // ioredis's disconnect() armed its 2 s disconnect timer (not unref'd) on the socket that had
  // already closed, so nothing ever cleared it: the process lived on after quit()
  const leftAfterQuit = (config: { ports: number[]; down?: boolean }) => printed(quitReconnecting, config, 60_000);

  it("leaves nothing alive once the server killed the subscriber's connection", async () => {
    const port = servers.servers[0]?.port as number;
    expect(await leftAfterQuit({ ports: [port] })).toEqual({ waiter: "LockUnavailableError", left: [] });
  }, 60_000);

  it("leaves nothing alive while the subscriber's first connection is refused (instance down)", async () => {
    const ports = [...servers.servers.map((server) => server.port), await freePort()];
    expect(await leftAfterQuit({ ports, down: true })).toEqual({ waiter: "LockUnavailableError", left: [] });
  }, 60_000);
});

describe("quit() while a node-redis hand-over subscriber is between two connection attempts", () => {
  // node-redis waits for its next attempt on a timer of its own (not unref'd) that destroy() does
  // not clear: the process lived on after quit() for as long as the reconnectStrategy asked
  it("leaves nothing alive, and exits, once the server dropped its connection and refused a reconnect", async () => {
    const server = await startServer();
    try {
      expect(await printed(quitReconnectingNodeRedis, { port: server.port }, 90_000)).toEqual({
        waiter: "LockUnavailableError",
        left: [],
      });
    } finally {
      await server.stop();
    }
  }, 120_000);
});

describe("quit() while a node-redis Sentinel's hand-over subscriber cannot connect", () => {
  // its connect() resolved once quit() had destroyed it, and the SUBSCRIBE then sent made the
  // Sentinel open a new pub/sub connection that nobody closed: it retried (or stayed subscribed)
  // for good
  it("opens nothing after quit(): the process exits once it closed its own Sentinel", async () => {
    // no failover: the master only refuses new connections
    const sentinel = await startSentinel("mymaster", { downAfterMs: 60_000 });
    try {
      const config = { sentinelPort: sentinel.sentinelPort, name: sentinel.name, masterPort: sentinel.master.port };
      expect(await printed(quitConnectingNodeRedisSentinel, config, 60_000)).toEqual({
        waiter: "LockUnavailableError",
      });
    } finally {
      await sentinel.stop();
    }
  }, 90_000);
});

describe("quit() while a client Redlock created is between two connection attempts", () => {
  // ioredis's disconnect() armed its 2 s disconnect timer on the socket that had already closed;
  // and such a client never emits 'end', which quit() must not wait for (nothing else may be
  // keeping the process alive: an unsettled top-level await exits it with code 13)
  const leftAfterQuit = (config: { ports: number[]; down?: boolean }) => printed(quitOwned, config, 60_000);

  it("resolves and leaves nothing alive once the server killed its connection", async () => {
    const ports = servers.servers.map((server) => server.port);
    expect(await leftAfterQuit({ ports })).toEqual({ quit: "resolved", left: [] });
  }, 60_000);

  it("resolves and leaves nothing alive while its instance refuses the connection (instance down)", async () => {
    const ports = [...servers.servers.map((server) => server.port), await freePort()];
    expect(await leftAfterQuit({ ports, down: true })).toEqual({ quit: "resolved", left: [] });
  }, 60_000);
});
