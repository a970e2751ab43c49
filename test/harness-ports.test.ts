/**
 * The harness's ports (helpers/redis-process.ts). Three files run at once, and a server killed for a
 * while keeps its port for restart() while its clients keep reconnecting to it: no other server may
 * get that port meanwhile, and restart() must not take another process's server there for its own.
 */
import { readFileSync } from "node:fs";
import { expect, it } from "vitest";
import { BLOCK_SIZE, freePort, RedisServer, startServer } from "./helpers/redis-process.js";

/** The first port the kernel hands to listen(0) and to outgoing connections. */
const ephemeralFrom = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);

it("hands out each port once, with its Cluster bus port (+10000), below the ports any listen(0) gets", async () => {
  const ports = await Promise.all(Array.from({ length: 100 }, () => freePort()));
  expect(new Set(ports).size).toBe(100);
  expect(Math.max(...ports) + 10_000).toBeLessThan(ephemeralFrom);
});

it("gives each of the three workers ports of its own, bus ports included", async () => {
  const pool = Number(process.env.VITEST_POOL_ID);
  const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
  // worker 1 from 10000, worker 2 from 13333, worker 3 from 16666; bus ports from 20000
  const own = ports.filter((port) => Math.floor((port - 10_000) / BLOCK_SIZE) + 1 === pool);
  expect(own).toEqual(ports);
});

it("restart() does not take another process's server on its port for its own", async () => {
  const server = await startServer();
  const intruder = new RedisServer(server.port);
  try {
    await server.kill();
    // what the other file's startServer() did if its free port was this one
    await intruder.start();
    await expect(server.start()).rejects.toThrow(`redis-server on port ${server.port} did not start`);
  } finally {
    await Promise.all([server.stop(), intruder.stop()]);
  }
});
