/**
 * The test proxy (helpers/delay-proxy.ts) itself: its delays are monotonic time, so a test that
 * mocks the wall clock (timing.test.ts's ±1 h jumps) does not stall, or hurry, the connections
 * behind it.
 */
import { afterEach, expect, it, vi } from "vitest";
import { startDelayProxy } from "./helpers/delay-proxy.js";
import { type RedisServer, useRedisServers } from "./helpers/redis-servers.js";

const cluster = useRedisServers(1);

afterEach(() => {
  vi.restoreAllMocks();
});

it("delays each chunk on the monotonic clock: a wall clock that jumps back an hour at every reading stalls nothing", async () => {
  const server = cluster.servers[0] as RedisServer;
  const proxy = await startDelayProxy(server.port, { upDelayMs: 20, downDelayMs: 20 });
  const client = server.client({ port: proxy.port });
  try {
    expect(await client.ping()).toBe("PONG");
    const realNow = Date.now.bind(Date);
    let calls = 0;
    // a chunk's due time read from Date.now lies an hour after the next reading: it would wait an hour
    vi.spyOn(Date, "now").mockImplementation(() => realNow() - 3_600_000 * ++calls);
    expect(await client.ping()).toBe("PONG");
  } finally {
    vi.restoreAllMocks();
    client.disconnect();
    await proxy.close();
  }
});
