/**
 * Test topologies beyond N independent masters: a Redis Cluster (masters joined with
 * `redis-cli --cluster create`, optionally with replicas) and a Sentinel set (master, replica,
 * one sentinel). Every process is started by the harness and stopped by its PID.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Cluster, type ClusterOptions, Redis } from "ioredis";
import { type NodeRedisCluster, nodeRedisClusterOf } from "./node-redis.js";
import { freePort, type RedisServer, sleep, startServer, startServers } from "./redis-servers.js";

const run = promisify(execFile);

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function ask<T>(port: number, call: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0 });
  client.on("error", () => {});
  try {
    await client.connect();
    return await call(client);
  } finally {
    client.disconnect();
  }
}

export interface TestCluster {
  /** Every node: masters and replicas. */
  readonly servers: RedisServer[];
  /** An ioredis Cluster client; closed by stop(). */
  client(options?: ClusterOptions): Cluster;
  /** A node-redis Cluster client, not connected yet; closed by stop(). */
  nodeRedis(defaults?: Parameters<typeof nodeRedisClusterOf>[1]): NodeRedisCluster;
  /** The server that owns `key`'s slot. */
  ownerOf(key: string): Promise<RedisServer>;
  /** The replicas of `master`. */
  replicasOf(master: RedisServer): Promise<RedisServer[]>;
  /**
   * Promotes `replica` (`CLUSTER FAILOVER`, or `FAILOVER TAKEOVER`, which asks nobody and so
   * works with the replica cut off from its master); resolves once it is a master and its old
   * master a replica.
   */
  failover(replica: RedisServer, how?: "TAKEOVER"): Promise<void>;
  /** Opens the migration of `key`'s slot from its master to another one (`CLUSTER SETSLOT … IMPORTING/MIGRATING`). */
  migrateSlotOf(key: string): Promise<SlotMigration>;
  stop(): Promise<void>;
}

/** A slot half moved, as `redis-cli --cluster reshard` leaves it between its steps. */
export interface SlotMigration {
  readonly slot: number;
  readonly source: RedisServer;
  readonly target: RedisServer;
  /** MIGRATEs these keys of the slot to the target, in one command. */
  move(...keys: string[]): Promise<void>;
  /** Gives the slot to the target on every master (`SETSLOT … NODE`), which ends the migration. */
  finish(): Promise<void>;
  /** The keys of the slot that the source and the target hold (`CLUSTER GETKEYSINSLOT`, which no migration redirects). */
  keys(): Promise<{ source: string[]; target: string[] }>;
}

/** CLUSTER SLOTS: [first slot, last slot, master, ...replicas], each node [host, port, id]. */
type SlotRange = [number, number, ...[string, number, string][]];

/**
 * `masters` masters with `replicas` replicas each. Ready once every node answers cluster_state:ok
 * and lists every replica in CLUSTER SLOTS (where an ioredis Cluster learns of them), and every
 * replica's link to its master is up. A failed start stops what it started.
 */
export async function startCluster(masters = 3, replicas = 0): Promise<TestCluster> {
  const servers = await startServers(masters * (1 + replicas), {
    args: [
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      "nodes.conf",
      "--cluster-node-timeout",
      "500",
      // slots of a dead master fail; the other masters keep serving theirs
      "--cluster-require-full-coverage",
      "no",
      // a replica's full sync (a failover's old master, a replica cut off) starts at once, not after 5 s
      "--repl-diskless-sync-delay",
      "0",
    ],
  });
  try {
    await formCluster(servers, replicas);
  } catch (error) {
    await Promise.all(servers.map((server) => server.stop()));
    throw error;
  }
  const clients = new Set<Cluster>();
  const nodeRedisClients = new Set<NodeRedisCluster>();
  const replicasPer = replicas;
  let slots: SlotRange[] | undefined;
  const slotRanges = async () => {
    slots ??= (await ask((servers[0] as RedisServer).port, (c) => c.cluster("SLOTS"))) as unknown as SlotRange[];
    return slots;
  };
  const serverAt = (port: unknown) => {
    const server = servers.find((s) => s.port === Number(port));
    if (!server) throw new Error(`no server on port ${String(port)}`);
    return server;
  };
  const ownerOf = async (key: string) => {
    const slot = await ask((servers[0] as RedisServer).port, (c) => c.cluster("KEYSLOT", key));
    const range = (await slotRanges()).find(([from, to]) => slot >= from && slot <= to);
    if (!range) throw new Error(`no owner for slot ${slot}`);
    return serverAt(range[2]?.[1]);
  };
  return {
    servers,
    client(options = {}) {
      const client = new Cluster(
        servers.map((server) => ({ host: "127.0.0.1", port: server.port })),
        { redisOptions: { maxRetriesPerRequest: 1 }, ...options },
      );
      client.on("error", () => {});
      clients.add(client);
      return client;
    },
    nodeRedis(defaults) {
      const client = nodeRedisClusterOf(
        servers.map((server) => server.port),
        defaults,
      );
      nodeRedisClients.add(client);
      return client;
    },
    ownerOf,
    async failover(replica, how) {
      const role = (server: RedisServer) => ask(server.port, (c) => c.call("ROLE") as Promise<[string]>);
      const [, host, port] = (await role(replica)) as unknown as [string, string, number];
      const master = serverAt(port);
      await ask(replica.port, (c) => (how ? c.cluster("FAILOVER", how) : c.cluster("FAILOVER")));
      await until(
        `${replica.port} a master, ${host}:${port} its replica`,
        async () => (await role(replica))[0] === "master" && (await role(master))[0] === "slave",
      );
      // where clients and ownerOf/replicasOf learn of it
      for (const server of servers) {
        await until(`${server.port} to list ${replica.port} as a master`, async () => {
          const ranges = (await ask(server.port, (c) => c.cluster("SLOTS"))) as unknown as SlotRange[];
          return ranges.some((range) => Number(range[2]?.[1]) === replica.port && range.length === 2 + 1 + replicasPer);
        });
      }
      slots = undefined;
    },
    async migrateSlotOf(key) {
      const source = await ownerOf(key);
      const masters = new Set((await slotRanges()).map((range) => Number(range[2]?.[1])));
      const target = servers.find((server) => server !== source && masters.has(server.port)) as RedisServer;
      const slot = await ask(source.port, (c) => c.cluster("KEYSLOT", key));
      const idOf = (server: RedisServer) => ask(server.port, (c) => c.cluster("MYID") as Promise<string>);
      const [sourceId, targetId] = await Promise.all([idOf(source), idOf(target)]);
      // the order redis-cli follows: importing first, so that no ASK points at a node that refuses it
      await ask(target.port, (c) => c.cluster("SETSLOT", slot, "IMPORTING", sourceId));
      await ask(source.port, (c) => c.cluster("SETSLOT", slot, "MIGRATING", targetId));
      return {
        slot,
        source,
        target,
        async move(...keys) {
          await ask(source.port, (c) => c.migrate("127.0.0.1", target.port, "", 0, 5000, "KEYS", ...keys));
        },
        async finish() {
          for (const server of [target, source, ...servers.filter((s) => s !== target && s !== source)]) {
            await ask(server.port, (c) => c.cluster("SETSLOT", slot, "NODE", targetId));
          }
          slots = undefined;
        },
        async keys() {
          const [onSource, onTarget] = await Promise.all(
            [source, target].map((s) => ask(s.port, (c) => c.cluster("GETKEYSINSLOT", slot, 100))),
          );
          return { source: (onSource as string[]).sort(), target: (onTarget as string[]).sort() };
        },
      };
    },
    async replicasOf(master) {
      const range = (await slotRanges()).find((r) => Number(r[2]?.[1]) === master.port);
      if (!range) throw new Error(`${master.port} is no master`);
      return (range.slice(3) as [string, number, string][]).map((node) => serverAt(node[1]));
    },
    async stop() {
      for (const client of clients) client.disconnect();
      for (const client of nodeRedisClients) if (client.isOpen) client.destroy();
      await Promise.all(servers.map((server) => server.stop()));
    },
  };
}

async function formCluster(servers: readonly RedisServer[], replicas: number): Promise<void> {
  await run("redis-cli", [
    "--cluster",
    "create",
    ...servers.map((server) => `127.0.0.1:${server.port}`),
    "--cluster-replicas",
    String(replicas),
    "--cluster-yes",
  ]);
  const nodesPerRange = 1 + replicas;
  for (const server of servers) {
    await until(`cluster_state:ok on ${server.port}`, async () =>
      (await ask(server.port, (c) => c.cluster("INFO"))).includes("cluster_state:ok"),
    );
    await until(`every replica in CLUSTER SLOTS on ${server.port}`, async () => {
      const ranges = (await ask(server.port, (c) => c.cluster("SLOTS"))) as unknown as SlotRange[];
      return ranges.length > 0 && ranges.every((range) => range.length === 2 + nodesPerRange);
    });
    await until(`${server.port} a master, or a replica in sync`, async () => {
      const info = await ask(server.port, (c) => c.info("replication"));
      return info.includes("role:master") || info.includes("master_link_status:up");
    });
  }
}

export interface TestSentinel {
  readonly master: RedisServer;
  readonly replica: RedisServer;
  readonly sentinelPort: number;
  readonly name: string;
  /** Port of the master the sentinel currently announces. */
  masterPort(): Promise<number>;
  /**
   * A manual failover (`SENTINEL FAILOVER`): resolves once the sentinel announces the replica as
   * master. The old master stays a master, taking writes from the clients still connected to it,
   * until the sentinel turns it into a replica (some seconds later).
   */
  failover(): Promise<void>;
  /** Kills the sentinel (SIGKILL) and starts it again on its port, with the state it wrote. */
  restartSentinel(): Promise<void>;
  stop(): Promise<void>;
}

/** A server started as a replica of the one on `masterPort` (`--replicaof`), once its link to it is up. */
export async function startReplicaOf(masterPort: number): Promise<RedisServer> {
  const replica = await startServer({ args: ["--replicaof", "127.0.0.1", String(masterPort)] });
  await until("the replica's link to its master", async () =>
    (await ask(replica.port, (c) => c.info("replication"))).includes("master_link_status:up"),
  );
  return replica;
}

/**
 * A master, one replica and one sentinel (quorum 1) that fails over `downAfterMs` (300 ms) after the
 * master stops answering: its PINGs, and whatever the sentinel's own connection sent before them.
 */
export async function startSentinel(name = "mymaster", { downAfterMs = 300 } = {}): Promise<TestSentinel> {
  const [master, replica] = (await startServers(2)) as [RedisServer, RedisServer];
  await ask(replica.port, (c) => c.replicaof("127.0.0.1", master.port));
  await until("replication link up", async () =>
    (await ask(replica.port, (c) => c.info("replication"))).includes("master_link_status:up"),
  );
  const sentinelPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "redlock-kit-sentinel-"));
  const config = join(dir, "sentinel.conf");
  writeFileSync(
    config,
    [
      `port ${sentinelPort}`,
      "bind 127.0.0.1",
      `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
      `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
      `sentinel failover-timeout ${name} 2000`,
      "",
    ].join("\n"),
  );
  const spawnSentinel = () => spawn("redis-server", [config, "--sentinel"], { stdio: "ignore" });
  let sentinel: ChildProcess = spawnSentinel();
  const stopSentinel = async () => {
    if (sentinel.exitCode !== null || sentinel.signalCode !== null) return;
    const exited = new Promise((resolve) => sentinel.once("exit", resolve));
    sentinel.kill("SIGKILL");
    await exited;
  };
  process.once("exit", () => sentinel.kill("SIGKILL"));
  const masterPort = async () => {
    const [, port] = (await ask(sentinelPort, (c) => c.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name))) as [
      string,
      string,
    ];
    return Number(port);
  };
  try {
    await until("sentinel sees the replica", async () => {
      const replicas = (await ask(sentinelPort, (c) => c.call("SENTINEL", "REPLICAS", name))) as unknown[];
      return (await masterPort()) === master.port && replicas.length === 1;
    });
  } catch (error) {
    await stopSentinel();
    throw error;
  }
  return {
    master,
    replica,
    sentinelPort,
    name,
    masterPort,
    async failover() {
      const before = await masterPort();
      // refused (NOGOODSLAVE) until the sentinel has read the replica's state
      await until("the sentinel to start a failover", async () => {
        await ask(sentinelPort, (c) => c.call("SENTINEL", "FAILOVER", name));
        return true;
      });
      await until("the sentinel to announce the promoted replica", async () => (await masterPort()) !== before);
    },
    async restartSentinel() {
      await stopSentinel();
      sentinel = spawnSentinel();
      await until("the sentinel back", async () => (await masterPort()) > 0);
    },
    async stop() {
      await stopSentinel();
      await Promise.all([master.stop(), replica.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export { until };
