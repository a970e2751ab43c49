/**
 * The node-redis rows (issue 23): redlock-kit handed node-redis clients (the `redis` package),
 * sequential and concurrent, 1 and 3 instances, × a floor of the same shape as the ioredis floor
 * but sent through node-redis: `SET NX PX`, then a compare-and-delete script by SHA, with a quorum
 * check and nothing else. node-redis writes the commands of one event-loop turn together (at
 * setImmediate), for the floor and redlock-kit alike.
 */
import { createHash } from "node:crypto";
import { Redlock } from "@redlock-kit/core";
import { createClient } from "redis";
import { type ContenderFactory, floorStyle, TTL } from "./contenders.js";
import { runThroughputRow } from "./core-rows.js";
import { FLOOR_RELEASE } from "./floor-script.js";
import type { Section } from "./results.js";
import type { RoundPlan } from "./rounds.js";

const HANDED = "handed node-redis clients (redis 6, its defaults)";
const FLOOR_RELEASE_SHA = createHash("sha1").update(FLOOR_RELEASE).digest("hex");

/** A node-redis client of `port`, connecting (commands queue until it is). */
function nodeRedisClient(port: number) {
  const client = createClient({ socket: { host: "127.0.0.1", port } });
  client.on("error", () => {});
  client.connect().catch(() => {});
  return client;
}

type NodeRedisClient = ReturnType<typeof nodeRedisClient>;

const nodeRedisClients = (ports: readonly number[]): NodeRedisClient[] => ports.map(nodeRedisClient);

async function closeNodeRedis(clients: readonly NodeRedisClient[]): Promise<void> {
  await Promise.all(clients.map((client) => client.close().catch(() => client.destroy())));
}

const NODE_REDIS_FLOOR: ContenderFactory = {
  name: "floor (raw node-redis)",
  create(ports) {
    const clients = nodeRedisClients(ports);
    // loaded before the first release: it queues behind the connection, ahead of every release
    for (const client of clients) client.sendCommand(["SCRIPT", "LOAD", FLOOR_RELEASE]).catch(() => {});
    const quorum = Math.floor(clients.length / 2) + 1;
    const setNx = (client: NodeRedisClient, key: string, value: string) =>
      client.sendCommand(["SET", key, value, "PX", String(TTL), "NX"]);
    const release = (key: string, value: string) =>
      Promise.all(clients.map((client) => client.sendCommand(["EVALSHA", FLOOR_RELEASE_SHA, "1", key, value])));
    const take = async (key: string, value: string): Promise<boolean> => {
      const replies = await Promise.all(clients.map((client) => setNx(client, key, value)));
      if (replies.filter((reply) => String(reply) === "OK").length >= quorum) return true;
      await release(key, value);
      return false;
    };
    return floorStyle(this.name, HANDED, [], take, release, () => closeNodeRedis(clients));
  },
};

const REDLOCK_KIT_NODE_REDIS: ContenderFactory = {
  name: "redlock-kit (node-redis clients)",
  create(ports) {
    const clients = nodeRedisClients(ports);
    const dlm = new Redlock(clients);
    return {
      name: this.name,
      clients: HANDED,
      redisClients: [],
      async cycle(key) {
        await dlm.unlock(await dlm.acquire(key, TTL));
      },
      async acquireWaiting(key) {
        const lock = await dlm.acquire(key, TTL, { wait: 60_000 });
        return () => dlm.unlock(lock);
      },
      async close() {
        await dlm.quit();
        await closeNodeRedis(clients);
      },
    };
  },
};

export async function runNodeRedisRows(
  ports: readonly number[],
  plan: RoundPlan,
  log: (line: string) => void,
): Promise<Section[]> {
  const factories = [NODE_REDIS_FLOOR, REDLOCK_KIT_NODE_REDIS];
  const variant = { id: "noderedis", title: "node-redis clients" };
  const sections: Section[] = [];
  for (const kind of ["sequential", "concurrent"] as const) {
    for (const instances of [1, 3] as const) {
      sections.push(await runThroughputRow({ kind, instances, factories }, ports, plan, log, variant));
    }
  }
  return sections;
}
