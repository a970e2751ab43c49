/**
 * Where the examples run: REDIS_URL, else throwaway redis-server processes, else MemoryStore.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseRedisUrls, portFromEnv, probeRedis, redactUrl, startBackend } from "../examples/support/src/index.js";
import { freePort, useRedisServers } from "./helpers/redis-servers.js";

const cluster = useRedisServers(3);
const emptyDir = mkdtempSync(join(tmpdir(), "redlock-kit-empty-path-"));

afterAll(() => {
  rmSync(emptyDir, { recursive: true, force: true });
});

/** The environment of a machine without REDIS_URL. */
function envWithoutRedisUrl(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.REDIS_URL;
  return env;
}

describe("REDIS_URL", () => {
  it("splits a comma-separated list into one URL per instance, ignoring blanks and spaces", () => {
    expect(parseRedisUrls(" redis://a:1, redis://b:2 ,,rediss://c:3/2 ")).toEqual([
      "redis://a:1",
      "redis://b:2",
      "rediss://c:3/2",
    ]);
    expect(() => parseRedisUrls("localhost:6379")).toThrow(TypeError);
  });

  it("is printed without user name or password", () => {
    expect(redactUrl("redis://user:secret@10.0.0.1:6380/2")).toBe("redis://10.0.0.1:6380/2");
    expect(redactUrl("rediss://:secret@cache.internal:6379")).toBe("rediss://cache.internal:6379");
  });

  it("gives one Redlock instance per URL, and a lock taken through it is held on every server", async () => {
    const urls = cluster.servers.map((server) => `redis://127.0.0.1:${server.port}`);
    const backend = await startBackend({ env: { REDIS_URL: urls.join(",") } });
    try {
      expect(backend.kind).toBe("redis-url");
      expect(backend.servers).toEqual([]);
      expect(backend.redlock.stores).toHaveLength(3);
      expect(backend.description).toContain("3 Redis instances from REDIS_URL");
      expect(backend.description).not.toContain("not answering");
      const lock = await backend.redlock.acquire("support:url", 5000);
      // acquire resolves at the quorum; the third SET lands right after
      await expect
        .poll(() => Promise.all(cluster.servers.map((server) => server.client().get("support:url"))))
        .toEqual([lock.value, lock.value, lock.value]);
      await lock.release();
    } finally {
      await backend.close();
    }
  });

  it("names the instances that do not answer, without their password", async () => {
    const deadPort = await freePort();
    const backend = await startBackend({ env: { REDIS_URL: `redis://:secret@127.0.0.1:${deadPort}` } });
    try {
      expect(backend.description).toContain(`not answering now: redis://127.0.0.1:${deadPort}`);
      expect(backend.description).not.toContain("secret");
    } finally {
      await backend.close();
    }
  });
});

describe("without REDIS_URL", () => {
  it("starts three throwaway redis-server processes when redis-server is on PATH, and stops them by PID on close()", async () => {
    const backend = await startBackend({ env: envWithoutRedisUrl() });
    let closed = false;
    try {
      expect(backend.kind).toBe("redis-server");
      expect(backend.servers).toHaveLength(3);
      expect(new Set(backend.servers.map((server) => server.port)).size).toBe(3);
      for (const { port } of backend.servers) expect(await probeRedis({ host: "127.0.0.1", port })).toBe(true);
      expect(backend.description).toContain(backend.servers.map((server) => server.port).join(", "));
      const lock = await backend.redlock.acquire("support:spawned", 5000);
      expect(lock.valid).toBe(true);
      await lock.release();
      await backend.close();
      closed = true;
      for (const { port } of backend.servers) expect(await probeRedis({ host: "127.0.0.1", port })).toBe(false);
      await backend.close();
    } finally {
      if (!closed) await backend.close();
    }
  });

  it("falls back to the in-process MemoryStore, and says so, when redis-server is not on PATH", async () => {
    const backend = await startBackend({ env: envWithoutRedisUrl({ PATH: emptyDir }) });
    try {
      expect(backend.kind).toBe("memory");
      expect(backend.description).toMatch(/MemoryStore.*redis-server is not on PATH/);
      const held = await backend.redlock.acquire("support:memory", 5000);
      expect(await backend.redlock.lock("support:memory", 1000, { wait: 0 })).toBeNull();
      await held.release();
    } finally {
      await backend.close();
    }
  });
});

describe("PORT", () => {
  it("defaults to 3000, accepts 0 for a free port, and refuses anything that is not a port", () => {
    expect(portFromEnv({})).toBe(3000);
    expect(portFromEnv({ PORT: "0" })).toBe(0);
    expect(portFromEnv({ PORT: "8080" })).toBe(8080);
    expect(() => portFromEnv({ PORT: "http" })).toThrow(/PORT must be an integer/);
    expect(() => portFromEnv({ PORT: "70000" })).toThrow(RangeError);
  });
});
