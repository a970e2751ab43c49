import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import type { Hono } from "hono";
import { useRedlockBed } from "#test-helpers/redlock-bed.js";

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

/** A test file's bed (`useRedlockBed`) whose `serve()` serves an app as `serveHono` does, closed after the test. */
export function useServedRedlock() {
  const bed = useRedlockBed((served: Served) => served.close());
  return {
    get redis() {
      return bed.redis;
    },
    get dlm() {
      return bed.dlm;
    },
    serve: async (app: Hono, options?: { nodeResponse?: boolean }): Promise<Served> =>
      bed.track(await serveHono(app, options)),
  };
}
