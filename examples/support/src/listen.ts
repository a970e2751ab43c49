import { once } from "node:events";
import type { AddressInfo, Server } from "node:net";

/**
 * The port to listen on: `PORT` when set (0 picks a free one), else `fallback`.
 * @default fallback 3000
 */
export function portFromEnv(env: NodeJS.ProcessEnv = process.env, fallback = 3000): number {
  const raw = env.PORT?.trim();
  if (!raw) return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`PORT must be an integer from 0 to 65535, got ${JSON.stringify(raw)}`);
  }
  return port;
}

/**
 * Listens on 127.0.0.1 (examples are not meant to be reachable from the network) and resolves
 * to the base URL; rejects if the port is taken.
 *
 * @example
 * const url = await listen(http.createServer(app), 3000); // "http://127.0.0.1:3000"
 */
export async function listen(server: Server, port: number): Promise<string> {
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
