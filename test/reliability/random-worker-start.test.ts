/**
 * The start of random-exclusion.test.ts's worker (fixtures/random-worker.mjs) under a connection
 * killed while it opens. Its faults begin once some sections went by, when a worker started late
 * may still be connecting: a node-redis PING sent then goes with the handshake and is rejected when
 * the connection dies (the client connects again), and awaited at the worker's top level that
 * rejection ended the process: "an unhandled SocketClosedUnexpectedlyError" under CLIENT KILL.
 */
import { afterEach, describe, expect, it } from "vitest";
import { type DelayProxy, startDelayProxy } from "../helpers/delay-proxy.js";
import { until } from "../helpers/redis.js";
import { type RedisServer, useRedisServers } from "../helpers/redis-servers.js";
import { type ForkedWorker, forkWorker } from "../helpers/workers.js";

const servers = useRedisServers(4);
const node = (i: number) => servers.servers[i] as RedisServer;
let proxy: DelayProxy | undefined;
let worker: ForkedWorker | undefined;

afterEach(async () => {
  await worker?.kill();
  await proxy?.close();
});

describe("random-worker.mjs on node-redis", () => {
  it("runs its sections when an instance's connection is killed during its handshake", async () => {
    proxy = await startDelayProxy(node(0).port);
    proxy.holdNewReplies = true;
    const held = proxy;
    worker = forkWorker("random-worker.mjs", {
      ports: [held.port, node(1).port, node(2).port],
      witnessPort: node(3).port,
      resources: ["r0", "r1", "r2"],
      seed: 1,
      callers: 1,
      sections: 1,
      library: "node-redis",
    });
    // node-redis writes the PING queued while it connected with its handshake, in one write
    await until("the handshake's replies held", async () => held.heldReplyBytes > 0);
    held.resetAll();
    held.releaseReplies();
    const done = await worker.next<{ failures: string[] }>("done");
    expect(done.failures).toEqual([]);
    worker.send({ kind: "quit" });
    await worker.next("quit");
    await worker.exited;
  });
});
