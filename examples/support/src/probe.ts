import { Redis, type RedisOptions } from "ioredis";

/** One connection attempt and a PING, bounded by `timeoutMs`; true when Redis answered. */
export async function probeRedis(target: string | RedisOptions, timeoutMs = 1000): Promise<boolean> {
  // no retries and no offline queue: this asks "is it up right now", the caller decides whether to ask again
  const options: RedisOptions = {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
  };
  const client = typeof target === "string" ? new Redis(target, options) : new Redis({ ...target, ...options });
  client.on("error", () => {});
  try {
    await client.connect();
    return (await client.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    // after a failed connect the client has already ended; disconnecting it again would leave
    // ioredis's 2 s disconnect timer waiting on a socket that will never close
    if (client.status !== "end") client.disconnect();
  }
}
