import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import type { Hono } from "hono";

/**
 * Serves `app` with @hono/node-server on a free loopback port. `nodeResponse: false` hides the Node
 * request and response from the app (no `c.env.outgoing`), as on Bun, Deno or a worker: the
 * middleware then follows the `Response` it returns.
 */
export async function serveHono(app: Hono, { nodeResponse = true } = {}) {
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
