import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMonitor } from "#test-helpers/monitor.js";
import { type RedisServer, startCluster, type TestCluster, until } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import {
  LockConfigurationError,
  LockUnavailableError,
  MemoryStore,
  RedisStore,
  Redlock,
  type RedlockInstance,
} from "../src/index.js";

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startCluster(3);
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

const totalKeys = async () => {
  let total = 0;
  for (const server of cluster.servers) {
    if (server.running) total += await server.client().dbsize();
  }
  return total;
};

describe("a Redis Cluster as one Redlock instance", () => {
  it("locks single keys on every master through an ioredis Cluster", async () => {
    const dlm = new Redlock([cluster.client()], { retryCount: 0 });
    // a new client says who it is (CLUSTER NODES) first: a 2 s lock's one attempt waits 200 ms for that
    await warmUp(dlm);
    const owners = new Set<number>();
    for (const key of ["a", "b", "c", "order:1", "order:2", "order:3", "x", "y", "z"]) {
      const lock = await dlm.acquire(key, 2000);
      owners.add((await cluster.ownerOf(key)).port);
      expect(await dlm.lock(key, 2000)).toBeNull();
      expect(await lock.release()).toBe(true);
    }
    expect(owners.size).toBe(3);
    expect(await totalKeys()).toBe(0);
  });

  it("refuses a multi-resource lock across hash slots with a RangeError before any command", async () => {
    const dlm = new Redlock([cluster.client()], { retryCount: 0 });
    await expect(dlm.lock(["order:1", "order:2"], 2000)).rejects.toThrow(RangeError);
    await expect(dlm.lock(["order:1", "order:2"], 2000)).rejects.toThrow(/share a hash slot/);
    expect(await totalKeys()).toBe(0);
  });

  it("locks several resources that share a {hash tag} all or nothing", async () => {
    const dlm = new Redlock([cluster.client()], { retryCount: 0 });
    await warmUp(dlm);
    const lock = await dlm.acquire(["{order:42}:payment", "{order:42}:stock"], 2000);
    expect(await dlm.lock(["{order:42}:stock", "{order:42}:invoice"], 2000)).toBeNull();
    await lock.release();
    expect(await totalKeys()).toBe(0);
  });

  it("refuses a plain client pointed at a Cluster node before any key is written, rather than MOVED answers", async () => {
    const node = cluster.servers[0]?.client();
    const dlm = new Redlock([node as Redis], { retryCount: 0 });
    // refused once the node said what it is (INFO): a 60 s lock waits up to 1 s for that, a 2 s
    // lock's 200 ms was missed under load (503); no warm-up can lock here
    const error = await dlm.lock("a", 60_000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as Error).message).toMatch(/^instances\[0\] \(127\.0\.0\.1:\d+\/0\) is a Redis Cluster node/);
    for (const key of ["order:1", "order:2", "order:3", "x"]) {
      await expect(dlm.lock(key, 2000)).rejects.toBeInstanceOf(LockConfigurationError);
    }
    expect(await totalKeys()).toBe(0);
  });

  it("names a MOVED or CROSSSLOT answer as a configuration error, with nothing written, when INFO is refused", async () => {
    const node = cluster.servers[0] as RedisServer;
    const admin = node.client();
    await admin.acl("SETUSER", "noinfo", "on", ">pw", "~*", "+@all", "-info");
    const plain = node.client({ username: "noinfo", password: "pw", enableReadyCheck: false });
    try {
      const dlm = new Redlock([plain], { retryCount: 3, retryDelay: 20 });
      const elsewhere = ["a", "b", "c", "d", "e", "f"];
      let moved = "";
      for (const key of elsewhere) if ((await cluster.ownerOf(key)) !== node) moved ||= key;
      const error = await dlm.lock(moved, 2000).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockConfigurationError);
      expect((error as Error).message).toBe(
        "instances[0] answered as a Redis Cluster node (MOVED): give Redlock an ioredis Cluster for it",
      );
      await expect(dlm.lock(["order:1", "order:2"], 2000)).rejects.toThrow(/Redis Cluster node \(CROSSSLOT\)/);
      expect(await totalKeys()).toBe(0);
    } finally {
      plain.disconnect();
      await admin.acl("DELUSER", "noinfo");
    }
  });

  it("refuses two Cluster clients of one cluster: every master would vote twice", async () => {
    const clients = [cluster.client(), cluster.client()];
    // each has said who it is: the 2 s lock's one attempt would wait only 200 ms for both to answer
    for (const client of clients) await warmUp(new Redlock([client]), { quit: true });
    const dlm = new Redlock([...clients, new MemoryStore()], { retryCount: 0 });
    await expect(dlm.lock("twice", 2000)).rejects.toThrow(
      "instances[1] (cluster) shares a Redis server with instances[0] (cluster): it would vote twice",
    );
    expect(await totalKeys()).toBe(0);
  });

  it("lets waiters poll, with no hand-over: PUBLISH counts only one node's subscribers, so a release could not tell who heard", async () => {
    // "x" and "{x}" share a queue slot too: waiters of both, in different Redlocks, take turns
    const dlms = [0, 1, 2, 3].map(() => new Redlock([cluster.client()], { retryDelay: 20, retryJitter: 10 }));
    const client = cluster.client();
    // "{shared}" hashes "shared": one slot, one node
    const owner = (await cluster.ownerOf("shared")).client();
    try {
      const holders = await Promise.all([
        (dlms[0] as Redlock).acquire("{shared}", 10_000),
        (dlms[1] as Redlock).acquire("shared", 10_000),
      ]);
      // from here on, an acquire naming a key on its node is a waiter's attempt
      const monitor = await startMonitor(owner);
      const attempted = (key: string) =>
        monitor.seen.some(({ args }) => (args[0] === "set" || args[0] === "evalsha") && args.includes(key));
      const wait = { wait: 60_000, signal: AbortSignal.timeout(20_000) };
      const seen: string[] = [];
      const section = async (dlm: Redlock, key: string) => {
        const lock = await dlm.acquire(key, 5000, wait);
        // whoever holds the lock finds its own value under the key
        seen.push(`${key}=${(await client.get(key)) === lock.value}`);
        await lock.release();
      };
      const waiting = [section(dlms[2] as Redlock, "{shared}"), section(dlms[3] as Redlock, "shared")];
      // both were refused while the holders held: they poll
      await expect.poll(() => attempted("{shared}") && attempted("shared")).toBe(true);
      await monitor.close();
      for (const holder of holders) await holder.release();
      await Promise.all(waiting);
      expect(seen.sort()).toEqual(["shared=true", "{shared}=true"]);
      // nobody queued, nobody subscribed
      expect(await client.exists("{shared}:redlock-kit:waiters")).toBe(0);
      for (const server of cluster.servers) {
        expect(await server.client().pubsub("CHANNELS", "redlock-kit:*")).toEqual([]);
      }
      expect(await totalKeys()).toBe(0);
    } finally {
      await Promise.all(dlms.map((dlm) => dlm.quit()));
      client.disconnect();
      owner.disconnect();
    }
  });

  it("queues nobody: a refused attempt's ticket leaves no queue beside the key, and its release hands the key to nobody", async () => {
    // a queue key named in every release, which no node had, made it a two-key script: TRYAGAIN
    // while the slot migrates (cluster-migration.test.ts)
    const store = new RedisStore(cluster.client());
    try {
      for (const key of ["plain-key", "{tagged}:key"]) {
        expect(await store.acquire([key], "holder", 2000)).toEqual({ acquired: true });
        const ticket = { channel: "cl", order: 1, holdMs: 1000, keepMs: 5000 };
        expect((await store.acquire([key], "waiter", 2000, ticket)).acquired).toBe(false);
        expect(await totalKeys()).toBe(1);
        expect(await store.release([key], "holder")).toBe(1);
        expect(await totalKeys()).toBe(0);
      }
    } finally {
      store.close();
      store.client.disconnect();
    }
  });

  it("fences keys on every master, each counter in its key's slot; refuses a key whose counter cannot share its slot", async () => {
    const client = cluster.client();
    const dlm = new Redlock([client], { retryCount: 0, fencing: true });
    await warmUp(dlm);
    const keys = ["a", "b", "c", "order:1", "{tag}:x"];
    for (const key of keys) {
      expect((await dlm.acquire(key, 2000)).fence).toBe("1");
      const lock = await dlm.acquire(key, 2000).catch(() => undefined);
      expect(lock).toBeUndefined();
    }
    const both = await dlm.acquire(["{order:42}:payment", "{order:42}:stock"], 2000);
    expect(both.fences).toEqual({ "{order:42}:payment": "1", "{order:42}:stock": "1" });
    // "a{}b" hashes whole, and so would neither "a{}b:suffix" nor "{a{}b}:suffix" (its tag is "a{")
    await expect(dlm.acquire("a{}b", 2000)).rejects.toThrow(/fence counter cannot share the hash slot/);
    await expect(dlm.acquire("a{}b", 2000, { fencing: false }).then((lock) => lock.release())).resolves.toBe(true);
    await both.release();
    const counters: string[] = [];
    for (const server of cluster.servers) counters.push(...(await server.client().keys("*redlock-kit:fence")));
    expect(counters.sort()).toEqual(
      ["a", "b", "c", "order:1", "{tag}:x", "{order:42}:payment", "{order:42}:stock"]
        .map((key) => (key.startsWith("{") ? key : `{${key}}`) + ":redlock-kit:fence")
        .sort(),
    );
    await Promise.all(cluster.servers.map((server) => server.client().flushall()));
    client.disconnect();
  });

  it("keeps fence counters in the slot of the key as sent, on a Cluster client with a keyPrefix: releases, fences and checks slots of prefixed keys", async () => {
    const client = cluster.client({ keyPrefix: "app:" });
    const dlm = new Redlock([client], { retryCount: 0 });
    const fencing = new Redlock([client], { retryCount: 0, fencing: true });
    try {
      // an untagged key's release (ioredis sends "app:job") and its fence counter, below, in the slot of the key as sent
      const lock = await dlm.acquire("job", 60_000);
      expect(await lock.release()).toBe(true);
      expect(await (await cluster.ownerOf("app:job")).client().exists("app:job")).toBe(0);
      // its fence counter too: every fenced acquisition was refused as a configuration error
      const first = await fencing.acquire("job", 60_000);
      expect(await first.release()).toBe(true);
      const second = await fencing.acquire("job", 60_000);
      expect(BigInt(second.fence as string)).toBe(BigInt(first.fence as string) + 1n);
      expect(await second.release()).toBe(true);
      // slots are those of the keys as sent: "app:order:1" and "app:order:2" are in different slots
      await expect(dlm.lock(["order:1", "order:2"], 2000)).rejects.toThrow(/share a hash slot/);
      // a prefix with a hash tag puts every key in its slot: any resources lock together
      const tagged = new Redlock([cluster.client({ keyPrefix: "{app}:" })], { retryCount: 0 });
      const both = await tagged.acquire(["order:1", "order:2"], 60_000);
      expect(await both.release()).toBe(true);
      const counters: string[] = [];
      for (const server of cluster.servers) counters.push(...(await server.client().keys("*redlock-kit:fence")));
      expect(counters).toEqual(["app:{app:job}:redlock-kit:fence"]);
      await Promise.all(cluster.servers.map((server) => server.client().flushall()));
    } finally {
      client.disconnect();
    }
  });

  it("a master paused (SIGSTOP): its slots are unavailable on ioredis and node-redis, and nothing is left once it resumes; with full coverage required, every slot is (CLUSTERDOWN)", async () => {
    const nodeRedis = cluster.nodeRedis();
    const dlms = [cluster.client(), (await nodeRedis.connect()) as unknown as RedlockInstance].map(
      // every call here fails: a short bound only makes the test shorter
      (client) => new Redlock([client], { retryCount: 0, instanceTimeout: 300 }),
    );
    const victim = cluster.servers[0] as RedisServer;
    const others = cluster.servers.slice(1);
    const keys = ["p1", "p2", "p3", "p4", "p5", "p6"];
    const owners = await Promise.all(keys.map((key) => cluster.ownerOf(key)));
    const paused = keys.filter((_, i) => owners[i] === victim).slice(0, 1);
    const served = keys.filter((_, i) => owners[i] !== victim);
    expect([paused.length, served.length > 0]).toEqual([1, true]);
    // every master's connection open and asked who it is
    for (const dlm of dlms) {
      for (const key of keys)
        await until("a master that answers", async () => (await dlm.inspect(key)).state === "free");
    }
    const state = async (server: RedisServer) => /cluster_state:(\w+)/.exec(await server.client().cluster("INFO"))?.[1];
    const fullCoverage = (value: "yes" | "no") =>
      Promise.all(others.map((server) => server.client().config("SET", "cluster-require-full-coverage", value)));
    /** Whether `server` flags the victim as failing (`fail` or `pfail` in CLUSTER NODES). */
    const flagsVictim = async (server: RedisServer) =>
      ((await server.client().cluster("NODES")) as string)
        .split("\n")
        .some((line) => line.includes(`:${victim.port}@`) && line.split(" ")[2]?.includes("fail"));
    /**
     * Resumes the victim; resolves once every node says ok and no node flags it any more (a node
     * reads the coverage rule again only when a node's state changes), and it ran what it was sent.
     */
    const resume = async () => {
      victim.resume();
      await until("cluster_state:ok, the victim failing nowhere", async () =>
        (
          await Promise.all(cluster.servers.map(async (s) => (await state(s)) === "ok" && !(await flagsVictim(s))))
        ).every(Boolean),
      );
      // on each connection to it, the acquisitions it held ran, then their give-backs, then this read
      for (const dlm of dlms) for (const key of paused) expect((await dlm.inspect(key)).state).toBe("free");
    };
    try {
      // its connections take the commands and answer nothing
      victim.pause();
      for (const dlm of dlms) {
        for (const key of paused) await expect(dlm.lock(key, 30_000)).rejects.toBeInstanceOf(LockUnavailableError);
      }
      await resume();
      // the default in production: once the paused master is failed, the whole cluster stops
      // (set before the pause, for the same reason)
      await fullCoverage("yes");
      victim.pause();
      await until("the others in cluster_state:fail", async () =>
        (await Promise.all(others.map(state))).every((s) => s === "fail"),
      );
      for (const dlm of dlms) {
        await expect(dlm.lock(served[0] as string, 30_000)).rejects.toBeInstanceOf(LockUnavailableError);
      }
    } finally {
      await fullCoverage("no");
      await resume();
      await Promise.all(dlms.map((dlm) => dlm.quit()));
    }
  });

  it("keeps locking on surviving masters when one master dies, and reports the dead slots as unavailable", async () => {
    const client = cluster.client();
    const dlm = new Redlock([client], { retryCount: 0, instanceTimeout: 200 });
    const keys = ["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10"];
    const owners = new Map<string, number>();
    for (const key of keys) owners.set(key, (await cluster.ownerOf(key)).port);
    await warmUp(dlm);
    const victim = cluster.servers[0];
    await victim?.kill();
    for (const key of keys) {
      if (owners.get(key) === victim?.port) {
        await expect(dlm.acquire(key, 1000)).rejects.toBeInstanceOf(LockUnavailableError);
      } else {
        const lock = await dlm.acquire(key, 1000);
        expect(await lock.release()).toBe(true);
      }
    }
    expect([...owners.values()]).toContain(victim?.port);
  });
});
