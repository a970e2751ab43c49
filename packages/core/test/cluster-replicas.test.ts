import type { ClusterOptions } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RedisServer, startCluster, type TestCluster, until } from "#test-helpers/redis.js";
import { LockContentionError, Redlock } from "../src/index.js";

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startCluster(3, 1);
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

const infoField = async (server: RedisServer, field: string) => {
  const info = await server.client().info("replication");
  return new RegExp(`^${field}:(.*)$`, "m").exec(info)?.[1]?.trim();
};

/**
 * Cuts `replica` off from `master`: it may no longer authenticate there (a user the master does not
 * know), and its link is dropped, so it keeps answering reads from what it had
 * (replica-serve-stale-data) while nothing written on the master reaches it. No replication lag
 * to wait for or race: the master has no replica connected. Undone by the returned function.
 */
async function cutOff(replica: RedisServer, master: RedisServer): Promise<() => Promise<void>> {
  const admin = replica.client();
  await admin.config("SET", "masteruser", "redlock-kit-nobody");
  await admin.config("SET", "masterauth", "wrong");
  await master.client().call("CLIENT", "KILL", "TYPE", "replica");
  await until("the master without its replica", async () => (await infoField(master, "connected_slaves")) === "0");
  return async () => {
    await admin.config("SET", "masterauth", "");
    await admin.config("SET", "masteruser", "");
    await until("the replica in sync again", async () => (await infoField(replica, "master_link_status")) === "up");
  };
}

/** What `replica` answers for `key` itself (READONLY: a replica of the key's slot, asked directly); its command counts reset. */
async function onReplica(replica: RedisServer, key: string) {
  const client = replica.client();
  await client.readonly();
  const exists = await client.exists(key);
  await client.config("RESETSTAT");
  return exists;
}

/** The commands on lock keys that `server` has run since its counts were reset. */
async function keyCommands(server: RedisServer) {
  const stats = await server.client().info("commandstats");
  return [...stats.matchAll(/^cmdstat_(get|pttl|exists|set|del|eval|evalsha|multi|exec):/gm)].map((m) => m[1]);
}

const toReplicas: [string, ClusterOptions["scaleReads"]][] = [
  ["slave", "slave"],
  ["a function that picks the replicas", (nodes: unknown[]) => nodes.slice(1)],
];

describe("an ioredis Cluster whose scaleReads sends reads to replicas", () => {
  it.each(toReplicas)(
    "scaleReads %s: inspect(), isLocked(), forceRelease() (with holder too) and a refused acquisition read the lock on its master, not on a stale replica",
    async (name, scaleReads) => {
      const key = `stale:${name}`;
      const master = await cluster.ownerOf(key);
      const [replica] = await cluster.replicasOf(master);
      if (!replica) throw new Error(`no replica of ${master.port}`);
      const dlm = new Redlock([cluster.client({ scaleReads })], { retryCount: 0 });
      const reconnect = await cutOff(replica, master);
      try {
        const lock = await dlm.acquire(key, 60_000);
        // the replica has not seen the lock and cannot: what is read there says "free"
        expect(await onReplica(replica, key)).toBe(0);

        expect(await dlm.isLocked(key)).toBe(true);
        expect(await dlm.inspect(key)).toMatchObject({ state: "held", held: 1, free: 0, ours: true });

        // one key, held: the holder's remaining ttl is the master's, not -2 from the replica
        const refused = await dlm.acquire(key, 1000).catch((error: unknown) => error);
        expect(refused).toBeInstanceOf(LockContentionError);
        const left = await master.client().pttl(key);
        expect((refused as LockContentionError).retryAfterMs).toBeGreaterThanOrEqual(left);

        expect((await lock.extend(60_000)).value).toBe(lock.value);

        // another holder than the one given: kept, as the master says (the replica would say free)
        const other = await dlm.forceRelease(key, { holder: "00000000" });
        expect(other).toMatchObject({ deleted: 0, kept: 1, unknown: 0 });
        expect(other.instances[0]?.holder).toBe((await dlm.inspect(key)).holder);
        expect(await dlm.forceRelease(key)).toMatchObject({ deleted: 1, unknown: 0 });
        expect(await master.client().exists(key)).toBe(0);
        expect(await lock.release()).toBe(false);
        // scripts (EVAL, EVALSHA) and MULTI are never sent to a replica
        expect(await keyCommands(replica)).toEqual([]);
      } finally {
        await reconnect();
        await dlm.quit();
      }
    },
  );
});

describe("inspecting a Cluster as a read-only ACL user", () => {
  /** What an ioredis Cluster client needs to connect (INFO, CLUSTER SLOTS/INFO, READONLY on replicas; CLUSTER NODES for the identity check), and `more`. */
  const reader = (...more: string[]) =>
    Promise.all(
      cluster.servers.map((server) =>
        server
          .client()
          .call(
            "ACL",
            ...["SETUSER", "reader", "reset", "on", ">readpw", "~*", "resetchannels"],
            ...["+info", "+cluster|slots", "+cluster|info", "+cluster|nodes", "+readonly", "+get", "+pttl", ...more],
          ),
      ),
    );
  const asReader = (scaleReads: ClusterOptions["scaleReads"]) =>
    new Redlock([
      cluster.client({ scaleReads, redisOptions: { username: "reader", password: "readpw", maxRetriesPerRequest: 1 } }),
    ]);

  it("needs +get +pttl with scaleReads master (a pipeline), and +multi +exec too with scaleReads slave (MULTI/EXEC)", async () => {
    const key = "acl:inspect";
    const lock = await new Redlock([cluster.client()]).acquire(key, 60_000);
    try {
      await reader();
      expect(await asReader("master").inspect(key)).toMatchObject({ state: "held", held: 1 });
      const refused = await asReader("slave").inspect(key);
      expect(refused).toMatchObject({ state: "unknown", unknown: 1 });
      expect(refused.instances[0]?.error?.message).toMatch(/NOPERM/);
      await reader("+multi", "+exec");
      expect(await asReader("slave").inspect(key)).toMatchObject({ state: "held", held: 1 });
    } finally {
      await lock.release();
    }
  });
});
