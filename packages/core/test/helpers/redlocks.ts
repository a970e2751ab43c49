import type { Redis } from "ioredis";
import { afterEach, beforeAll } from "vitest";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { Redlock, type RedlockOptions } from "../../src/index.js";

/**
 * `count` redis-servers for the file, one client each, and Redlocks on all of them that are quit
 * after each test; after each test every server runs again (a test may have paused one) and is
 * flushed.
 */
export function useRedlocks(count: number) {
  const cluster = useRedisServers(count);
  let clients: Redis[] = [];
  const redlocks: Redlock[] = [];
  beforeAll(() => {
    clients = cluster.servers.map((server) => server.client());
  });
  afterEach(async () => {
    for (const server of cluster.servers) server.resume();
    await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
    await Promise.all(clients.map((client) => client.flushall()));
  });
  return {
    server: (index: number) => cluster.servers[index] as RedisServer,
    client: (index: number) => clients[index] as Redis,
    clients: () => clients,
    redlock(options: RedlockOptions = {}): Redlock {
      const dlm = new Redlock(clients, options);
      redlocks.push(dlm);
      return dlm;
    },
  };
}
