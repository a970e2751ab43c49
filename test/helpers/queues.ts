import type { Redis } from "ioredis";

/** The queue of waiters for `key` on an instance (core's stores/script-calls.ts names it so). */
export const queueOf = (key: string) => `${key}:redlock-kit:waiters`;

/**
 * The hand-over channel of the waiter at `index` of `key`'s queue on `client`'s instance, from its
 * entry (channel:hold:value). Each instance names a Redlock's channel its own way
 * (core's stores/instance-channel.ts): read it on the instance it is used on.
 */
export async function queuedChannel(client: Redis, key: string, index = 0): Promise<string> {
  const [entry] = await client.zrange(queueOf(key), String(index), String(index));
  if (entry === undefined) throw new Error(`nobody at ${index} in ${queueOf(key)}`);
  return `redlock-kit:hand-over:${entry.split(":")[0]}`;
}
