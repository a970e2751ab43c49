/**
 * Test harness: real redis-server processes (see redis-process.ts) started before a test file's
 * tests and stopped after them.
 */
import { afterAll, beforeAll } from "vitest";
import { assertRedisInstalled } from "./redis-installed.js";
import { type RedisServer, type ServerOptions, startServers } from "./redis-process.js";

export * from "./redis-process.js";

/**
 * Starts `count` servers before the file's tests and stops them after, even when tests fail.
 * Read `.servers` inside tests.
 */
export function useRedisServers(count: number, options?: ServerOptions): { servers: RedisServer[] } {
  const holder = { servers: [] as RedisServer[] };
  beforeAll(async () => {
    assertRedisInstalled();
    holder.servers = await startServers(count, options);
  }, 30_000);
  afterAll(async () => {
    await Promise.all(holder.servers.map((server) => server.stop()));
  });
  return holder;
}
