import type { ClusterOptions } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RedisServer, startCluster, type TestCluster, until } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { LockContentionError, LockLostError, Redlock, type RedlockInstance } from "../src/index.js";

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
    // promoted since (FAILOVER TAKEOVER), the master is the replica now
    await until(
      "the replica in sync again",
      async () =>
        (await infoField(replica, "master_link_status")) === "up" ||
        (await infoField(master, "master_link_status")) === "up",
    );
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

describe("a replica promoted while locks are held", () => {
  const clients: [string, () => Promise<RedlockInstance>][] = [
    ["ioredis", async () => cluster.client()],
    [
      "node-redis",
      async () => {
        return (await cluster.nodeRedis().connect()) as unknown as RedlockInstance;
      },
    ],
  ];

  it.each(clients)(
    "%s: after CLUSTER FAILOVER the lock goes on (extend, release true); after a FAILOVER TAKEOVER by a replica that never had the key, its extension rejects with LockLostError, its release resolves false, and a rival takes it",
    async (name, connect) => {
      const dlm = new Redlock([await connect()], { retryCount: 0 });
      const rival = new Redlock([await connect()], { retryCount: 0 });
      // its first call is one attempt at a 1 s lock: 100 ms for a new client to say who it is
      await warmUp(rival);
      const [kept, lost] = [`{promoted-${name}}:kept`, `{promoted-${name}}:lost`];
      try {
        // a coordinated failover: the replica takes over once it has everything the master wrote
        const held = await dlm.acquire(kept, 60_000);
        await cluster.failover((await cluster.replicasOf(await cluster.ownerOf(kept)))[0] as RedisServer);
        expect((await held.extend(60_000)).valid).toBe(true);
        expect(await rival.lock(kept, 1000)).toBeNull();
        expect(await held.release()).toBe(true);

        // the replica cut off before the lock is taken: promoted without its key
        const master = await cluster.ownerOf(lost);
        const [replica] = await cluster.replicasOf(master);
        const reconnect = await cutOff(replica as RedisServer, master);
        const gone = await dlm.acquire(lost, 60_000);
        expect(await onReplica(replica as RedisServer, lost)).toBe(0);
        await cluster.failover(replica as RedisServer, "TAKEOVER");
        await reconnect();
        const extended = await gone.extend(60_000).catch((error: unknown) => error);
        expect(extended).toBeInstanceOf(LockLostError);
        expect(await gone.release()).toBe(false);
        // the documented caveat: replication is asynchronous, a second holder takes it
        const second = await rival.acquire(lost, 60_000);
        expect(await second.release()).toBe(true);
      } finally {
        await Promise.all([dlm.quit(), rival.quit()]);
      }
    },
  );
});
