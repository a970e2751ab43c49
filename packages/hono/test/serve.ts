import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { Redlock } from "@redlock-kit/core";
import type { Hono } from "hono";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";

/** A served app: its base URL, and how to close it (open connections included). */
export interface Served {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serves `app` with @hono/node-server on a free loopback port. `nodeResponse: false` hides the Node
 * request and response from the app (no `c.env.outgoing`), as on Bun, Deno or a worker: the
 * middleware then follows the `Response` it returns.
 */
export async function serveHono(app: Hono, { nodeResponse = true } = {}): Promise<Served> {
  const fetch = nodeResponse ? app.fetch : (request: Request) => app.fetch(request);
  const server = createAdaptorServer({ fetch }) as Server;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

/**
 * A test file's bed: one redis-server, a Redlock on it, and `serve()`, which serves an app as
 * `serveHono` does; after each test the servers are closed and Redis flushed, the Redlock quit at
 * the end.
 */
export function useServedRedlock() {
  const cluster = useRedisServers(1);
  const servers: Served[] = [];
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
    await Promise.all(servers.splice(0).map((server) => server.close()));
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
    async serve(app: Hono, options?: { nodeResponse?: boolean }): Promise<Served> {
      const server = await serveHono(app, options);
      servers.push(server);
      return server;
    },
  };
}
