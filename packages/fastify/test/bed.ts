import { Redlock } from "@redlock-kit/core";
import Fastify, { type FastifyInstance, type FastifyServerOptions } from "fastify";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";

/**
 * A test file's bed: one redis-server, a Redlock on it, and `app()`, a new Fastify instance closed
 * after the test (Redis flushed then); the Redlock quit at the end.
 */
export function useFastifyRedlock() {
  const cluster = useRedisServers(1);
  const apps: FastifyInstance[] = [];
  let redis: Redis | undefined;
  let dlm: Redlock | undefined;
  beforeAll(() => {
    redis = cluster.servers[0]?.client() as Redis;
    dlm = new Redlock([redis]);
  });
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((app) => app.close()));
    await redis?.flushall();
  });
  afterAll(async () => {
    await dlm?.quit();
  });
  return {
    get redis(): Redis {
      return redis as Redis;
    },
    get dlm(): Redlock {
      return dlm as Redlock;
    },
    app(options?: FastifyServerOptions): FastifyInstance {
      const app = Fastify(options);
      apps.push(app);
      return app;
    },
  };
}
