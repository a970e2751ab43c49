import type { Redis } from "ioredis";
import { afterEach, beforeAll } from "vitest";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { Redlock, type RedlockOptions } from "../../src/index.js";

/**
 * `count` redis-servers for the file, one client each, and Redlocks on all of them that are quit
 * after each test; after each test every server runs again (a test may have paused one) and is
 * flushed. The clients have said who they are before the first test (a Redlock of their own took a
 * lock): a test's first call is not one that waits for that.
 */
export function useRedlocks(count: number) {
  const cluster = useRedisServers(count);
  let clients: Redis[] = [];
  const redlocks: Redlock[] = [];
  beforeAll(async () => {
    clients = cluster.servers.map((server) => server.client());
    await warmUp(new Redlock(clients), { quit: true });
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
