import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll } from "vitest";
import { useRedisServers } from "./redis.js";
import { warmUp } from "./warm-up.js";

/**
 * A test file's bed: one redis-server and a warmed-up Redlock on it. `track` hands over what a test
 * opens (an app, a server); after each test every tracked one is closed and Redis flushed, and the
 * Redlock is quit at the end.
 */
export function useRedlockBed<T>(close: (opened: T) => Promise<unknown>) {
  const cluster = useRedisServers(1);
  const opened: T[] = [];
  let redis: Redis | undefined;
  let dlm: Redlock | undefined;
  beforeAll(async () => {
    redis = cluster.servers[0]?.client() as Redis;
    dlm = new Redlock([redis]);
    // a route makes one attempt, which waits for a new client to say who it is at most its
    // per-instance timeout: 50 ms for the 500 ms locks of some files
    await warmUp(dlm);
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map(close));
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
    track<U extends T>(one: U): U {
      opened.push(one);
      return one;
    },
  };
}
