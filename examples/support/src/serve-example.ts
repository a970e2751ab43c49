import type { Server } from "node:http";
import type { ExampleBackend } from "./backend.js";
import { type CurlLine, printBanner, seedCurlLines } from "./banner.js";
import { listen, portFromEnv } from "./listen.js";
import { onShutdown } from "./shutdown.js";

/**
 * What every example's `server.ts` does with its Node server: listen on `PORT` (127.0.0.1), print
 * the banner with the seed's curl lines (and `more`), and close the server and the backend on
 * SIGINT/SIGTERM. Resolves to the base URL.
 *
 * @example
 * const backend = await startBackend();
 * await serveExample("redlock-kit Koa example", createServer(app.callback()), backend);
 */
export async function serveExample(
  title: string,
  server: Server,
  backend: ExampleBackend,
  more: (url: string) => readonly CurlLine[] = () => [],
): Promise<string> {
  onShutdown(async () => {
    server.close();
    server.closeAllConnections();
    await backend.close();
  });
  const url = await listen(server, portFromEnv());
  printBanner(title, url, backend, [...seedCurlLines(url), ...more(url)]);
  return url;
}
