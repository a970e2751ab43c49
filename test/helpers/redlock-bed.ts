import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
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

/**
 * `useRedlockBed` whose `listen(handler)` serves a Node request handler (an Express app, a Koa app's
 * callback) on a free loopback port and returns its base URL; the server is closed after the test,
 * open connections too.
 */
export function useListeningBed() {
  const bed = useRedlockBed(
    (server: http.Server) =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  );
  return {
    get redis() {
      return bed.redis;
    },
    get dlm() {
      return bed.dlm;
    },
    async listen(handler: http.RequestListener): Promise<string> {
      const server = bed.track(http.createServer(handler).listen(0, "127.0.0.1"));
      await once(server, "listening");
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    },
  };
}
