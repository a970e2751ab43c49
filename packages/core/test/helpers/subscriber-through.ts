import type { RedisOptions } from "ioredis";
import type { DelayProxy } from "#test-helpers/delay-proxy.js";
import { closeNodeRedis, type NodeRedisClient, nodeRedisClient } from "#test-helpers/node-redis.js";
import type { RedisServer } from "#test-helpers/redis.js";

/**
 * A client of `server` whose subscriber connection (the `duplicate()` the library opens) goes
 * through `proxy`; its commands go straight to the server.
 */
export async function subscriberThrough(library: "ioredis" | "node-redis", server: RedisServer, proxy: DelayProxy) {
  if (library === "ioredis") {
    const client = server.client();
    const duplicate = client.duplicate.bind(client);
    client.duplicate = (override?: Partial<RedisOptions>) => duplicate({ ...override, port: proxy.port });
    return { client, close: () => client.disconnect() };
  }
  const client = await nodeRedisClient(server.port, { socket: { reconnectStrategy: () => 20 } }).connect();
  const duplicate = client.duplicate.bind(client) as (options?: object) => NodeRedisClient;
  (client as { duplicate: unknown }).duplicate = (override?: { socket?: object }) =>
    duplicate({ ...override, socket: { ...override?.socket, port: proxy.port } });
  return { client, close: () => closeNodeRedis([client as NodeRedisClient]) };
}
