/**
 * The invariant checks themselves: each detects what it guards against, so that a green
 * reliability suite means something.
 */
import net from "node:net";
import { describe, expect, it } from "vitest";
import { excess, keysOf, settledResources } from "../helpers/invariants.js";
import { useRedisServers } from "../helpers/redis-servers.js";

const cluster = useRedisServers(1);

describe("the invariant checks", () => {
  it("I1/I2 see every key with its PTTL, an immortal one as -1", async () => {
    const client = cluster.servers[0]?.client();
    if (!client) throw new Error("no server");
    await client.set("mortal", "v", "PX", 5000);
    await client.set("immortal", "v");
    const keys = await keysOf(client);
    expect(keys.get("immortal")).toBe(-1);
    expect(keys.get("mortal")).toBeGreaterThan(0);
    await client.flushall();
    expect((await keysOf(client)).size).toBe(0);
  });

  it("I3 sees a leaked timer and a leaked socket, and nothing once they are closed", async () => {
    const baseline = await settledResources();
    const timers = [setTimeout(() => {}, 60_000), setTimeout(() => {}, 60_000)];
    const socket = net.connect(cluster.servers[0]?.port as number, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    const leaked = excess(await settledResources(), baseline);
    expect(leaked.TCPSocketWrap).toBe(1);
    // vitest's own timers come and go by one; two leaked timers always show
    expect(leaked.Timeout).toBeGreaterThanOrEqual(1);
    for (const timer of timers) clearTimeout(timer);
    socket.destroy();
    expect(excess(await settledResources(), baseline)).toEqual({});
  });
});
