import type { Socket } from "node:net";
import type { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { RedisStore, Redlock } from "../src/index.js";
import { MAX_BATCH } from "../src/speed/write-batching.js";

const redis = useRedisServers(1);

/** Counts the writes that reach the socket (each one a syscall), however many commands they carry. */
function countSocketWrites(client: Redis): { readonly count: number; readonly largest: number } {
  const socket = client.stream as Socket & { _write: Socket["_write"]; _writev?: Socket["_writev"] };
  const counter = { count: 0, largest: 0 };
  const write = socket._write;
  const writev = socket._writev;
  socket._write = function countedWrite(this: Socket, ...args: Parameters<Socket["_write"]>) {
    counter.count++;
    counter.largest = Math.max(counter.largest, 1);
    return write.apply(this, args);
  };
  if (writev) {
    socket._writev = function countedWritev(this: Socket, ...args: Parameters<NonNullable<Socket["_writev"]>>) {
      counter.count++;
      // ioredis writes each command with one write() call: one chunk per command
      counter.largest = Math.max(counter.largest, args[0].length);
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

/** A Redlock on `client` that has asked the server who it is (one INFO per connection), so that only lock commands are counted. */
async function checkedRedlock(client: Redis): Promise<Redlock> {
  const dlm = new Redlock([client]);
  await dlm.unlock(await dlm.acquire("warm-up", 5000));
  return dlm;
}

describe("Commands bound for one instance", () => {
  it("leave in a few socket writes of at most MAX_BATCH commands when 50 locks are taken and released at once", async () => {
    const client = await connectedClient();
    const dlm = await checkedRedlock(client);
    const writes = countSocketWrites(client);
    const locks = await Promise.all(Array.from({ length: 50 }, (_, i) => dlm.acquire(`batch:${i}`, 5000)));
    const afterAcquire = writes.count;
    await Promise.all(locks.map((lock) => dlm.unlock(lock)));
    // a burst that starts from an idle connection writes its first two commands at once, the other 48 in batches of MAX_BATCH
    const batches = 2 + Math.ceil(48 / MAX_BATCH);
    expect(afterAcquire).toBeLessThanOrEqual(batches);
    expect(writes.count - afterAcquire).toBeLessThanOrEqual(batches);
    // capped, so that Redis starts on the first batch while the next is built
    expect(writes.largest).toBeGreaterThan(1);
    expect(writes.largest).toBeLessThanOrEqual(MAX_BATCH);
    expect(await client.keys("batch:*")).toEqual([]);
  });

  it("are written one by one, as soon as sent, when locks are taken one after another", async () => {
    const client = await connectedClient();
    const dlm = await checkedRedlock(client);
    const writes = countSocketWrites(client);
    for (let i = 0; i < 5; i++) await dlm.unlock(await dlm.acquire(`one-by-one:${i}`, 5000));
    // one SET and one release script per lock: nothing waits for company
    expect(writes.count).toBe(10);
  });

  it("arm no timer when the connection has nothing in flight: a lone lock and its release cost no setImmediate", async () => {
    const client = await connectedClient();
    const dlm = await checkedRedlock(client);
    await new Promise((resolve) => setImmediate(resolve));
    const immediates = () => process.getActiveResourcesInfo().filter((kind) => kind === "Immediate").length;
    const writes = countSocketWrites(client);
    const acquiring = dlm.acquire("lone", 5000);
    expect(writes.count).toBe(1);
    expect(immediates()).toBe(0);
    const lock = await acquiring;
    const releasing = dlm.unlock(lock);
    expect(writes.count).toBe(2);
    expect(immediates()).toBe(0);
    expect(await releasing).toBe(true);
  });

  it("are written at once when they start a new event-loop phase, however many earlier ones are unanswered", async () => {
    const client = await connectedClient();
    const store = new RedisStore(client);
    const writes = countSocketWrites(client);
    const server = redis.servers[0] as RedisServer;
    server.pause();
    let replies: Promise<unknown>[] = [];
    try {
      replies = [store.acquire(["phase:1"], "one", 5000)];
      expect(writes.count).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 5));
      // the first is still unanswered (the server is stopped); a third instance that answers after
      // the quorum is this case, and must not hold back the next lock's command
      replies.push(store.acquire(["phase:2"], "two", 5000));
      expect(writes.count).toBe(2);
    } finally {
      server.resume();
    }
    expect(await Promise.all(replies)).toEqual([{ acquired: true }, { acquired: true }]);
    await Promise.all([store.release(["phase:1"], "one"), store.release(["phase:2"], "two")]);
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
