/**
 * node-redis clients (the `redis` package) for tests: connected to a harness server on 127.0.0.1,
 * with an 'error' listener (node-redis throws an unheard 'error' event, and the fault tests stop
 * servers under the clients' feet), closed by `closeNodeRedis`.
 */
import { createClient, createCluster, type RedisClientType } from "redis";

export type NodeRedisClient = RedisClientType;

/** A client of the server on `port`, not yet connected (call `connect()`, or leave it closed on purpose). */
export function nodeRedisClient(port: number, options: Parameters<typeof createClient>[0] = {}): NodeRedisClient {
  const client = createClient({ ...options, socket: { host: "127.0.0.1", port, ...options.socket } });
  client.on("error", () => {});
  return client as unknown as NodeRedisClient;
}

/** Connected clients of the servers on `ports`, in order. */
export function connectedNodeRedis(ports: readonly number[]): Promise<NodeRedisClient[]> {
  return Promise.all(ports.map((port) => nodeRedisClient(port).connect() as Promise<NodeRedisClient>));
}

/** Closes the clients that are still open, at once (pending commands fail). */
export function closeNodeRedis(clients: readonly { isOpen: boolean; destroy(): unknown }[]): void {
  for (const client of clients) if (client.isOpen) client.destroy();
}

/** A Cluster client of the nodes on `ports` (a test cluster's servers), not yet connected. */
export function nodeRedisClusterOf(
  ports: readonly number[],
  defaults?: Parameters<typeof createCluster>[0]["defaults"],
) {
  const client = createCluster({ rootNodes: ports.map((port) => ({ socket: { host: "127.0.0.1", port } })), defaults });
  client.on("error", () => {});
  return client;
}

export type NodeRedisCluster = ReturnType<typeof nodeRedisClusterOf>;
