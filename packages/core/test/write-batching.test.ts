import type { Socket } from "node:net";
import type { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { useRedisServers } from "../../../test/helpers/redis-servers.js";
import { RedisStore, Redlock } from "../src/index.js";

const redis = useRedisServers(1);

/** Counts the writes that reach the socket (each one a syscall), however many commands they carry. */
function countSocketWrites(client: Redis): { readonly count: number } {
  const socket = client.stream as Socket & { _write: Socket["_write"]; _writev?: Socket["_writev"] };
  const counter = { count: 0 };
  const write = socket._write;
  const writev = socket._writev;
  socket._write = function countedWrite(this: Socket, ...args: Parameters<Socket["_write"]>) {
    counter.count++;
    return write.apply(this, args);
  };
  if (writev) {
    socket._writev = function countedWritev(this: Socket, ...args: Parameters<NonNullable<Socket["_writev"]>>) {
      counter.count++;
      return writev.apply(this, args);
    };
  }
  return counter;
}

async function connectedClient(): Promise<Redis> {
  const client = redis.servers[0]?.client() as Redis;
  await client.ping();
  return client;
}

describe("Commands bound for one instance", () => {
  it("leave in a couple of socket writes when 50 locks are taken and released at once", async () => {
    const client = await connectedClient();
    const dlm = new Redlock([client]);
    const writes = countSocketWrites(client);
    const locks = await Promise.all(Array.from({ length: 50 }, (_, i) => dlm.acquire(`batch:${i}`, 5000)));
    const afterAcquire = writes.count;
    await Promise.all(locks.map((lock) => dlm.unlock(lock)));
    // the first command of a burst goes out at once, the other 49 together
    expect(afterAcquire).toBeLessThanOrEqual(3);
    expect(writes.count - afterAcquire).toBeLessThanOrEqual(3);
    expect(await client.keys("batch:*")).toEqual([]);
  });

  it("are written one by one, as soon as sent, when locks are taken one after another", async () => {
    const client = await connectedClient();
    const dlm = new Redlock([client]);
    const writes = countSocketWrites(client);
    for (let i = 0; i < 5; i++) await dlm.unlock(await dlm.acquire(`one-by-one:${i}`, 5000));
    // one SET and one release script per lock: nothing waits for company
    expect(writes.count).toBe(10);
  });

  it("keep their replies apart: a refused lock in the middle of a burst is still refused", async () => {
    const client = await connectedClient();
    await client.set("burst:7", "someone-else", "PX", 5000);
    const store = new RedisStore(client);
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.acquire([`burst:${i}`], "mine", 5000)),
    );
    expect(replies.map((reply) => reply.acquired)).toEqual(Array.from({ length: 20 }, (_, i) => i !== 7));
    const refused = replies[7];
    expect(refused?.acquired === false && refused.holderTtl > 0).toBe(true);
  });
});
