import { createHash } from "node:crypto";
import { type Lock, Redlock } from "@redlock-kit/core";
import { Cluster } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { type RedisServer, startCluster, type TestCluster, useRedisServers } from "#test-helpers/redis.js";
import { scanResources } from "../src/scan.js";
import { runCli, start } from "./helpers/run-cli.js";

let cluster: TestCluster;
let client: Cluster;
let dlm: Redlock;
/** The one node the CLI is given: it learns the other masters from it. */
let seed: RedisServer;
let url: string;
/** A resource whose key lives on a master other than the seed: `owner`. */
let elsewhere: string;
let owner: RedisServer;

const plain = useRedisServers(2);

beforeAll(async () => {
  cluster = await startCluster(3);
  client = cluster.client();
  dlm = new Redlock([client], { keyPrefix: "lock:" });
  seed = cluster.servers[0] as RedisServer;
  url = `redis://127.0.0.1:${seed.port}`;
  for (const resource of ["a", "b", "c", "d", "e", "f", "g", "h"]) {
    owner = await cluster.ownerOf(`lock:${resource}`);
    if (owner !== seed) {
      elsewhere = resource;
      break;
    }
  }
}, 60_000);

afterEach(async () => {
  await Promise.all(cluster.servers.filter((server) => server.running).map((server) => server.client().flushall()));
});

afterAll(async () => {
  await cluster?.stop();
});

/** Every test starts the binary, a whole Node process each time: slow on a busy machine, never a hang. */
const PROCESS_TIMEOUT = { timeout: 90_000 };

const fingerprint = (lock: Lock) => createHash("sha256").update(lock.value).digest("hex").slice(0, 8);
const name = (server: RedisServer) => `cluster@127.0.0.1:${server.port}`;
const CANNOT_TELL = 'Cannot tell which locks match "never:*": fewer than a quorum of instances could be scanned.\n';

describe("redlock-kit on a Redis Cluster (one instance: the whole Cluster)", PROCESS_TIMEOUT, () => {
  it("list SCANs every master: finds a lock whose key lives on another shard than the seed's", async () => {
    const lock = await dlm.acquire(elsewhere, 60_000);
    const { code, stdout, stderr } = await runCli(["list", "--prefix", "lock:", "--redis", url]);
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    const lines = stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(new RegExp(`^RESOURCE +QUORUM +TTL +HOLDER +${name(seed)}$`));
    expect(lines[1]).toMatch(new RegExp(`^${elsewhere} +held 1/1 +\\d+s +${fingerprint(lock)} +\\d+s$`));
    expect(lines).toHaveLength(2);

    const json = await runCli(["list", "--prefix", "lock:", "--redis", url, "--json"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ instances: [name(seed)], quorum: 1, unavailable: [] });

    const watched = start(["watch", "--prefix", "lock:", "--json", "--interval", "100", "--redis", url]);
    await Promise.race([watched.waitFor("\n"), watched.exited]);
    watched.child.kill("SIGINT");
    expect(await watched.exited).toBe(0);
    const frame = JSON.parse(watched.stdout.split("\n")[0] as string);
    expect(frame).toMatchObject({ instances: [name(seed)], unavailable: [], locks: [{ resource: elsewhere }] });
  });

  it("inspect and release --force reach the key on another shard than the seed's", async () => {
    const lock = await dlm.acquire(elsewhere, 60_000);
    const inspected = await runCli(["inspect", elsewhere, "--prefix", "lock:", "--redis", url]);
    expect({ code: inspected.code, stderr: inspected.stderr }).toEqual({ code: 0, stderr: "" });
    expect(inspected.stdout).toContain(`is held by ${fingerprint(lock)} on 1 of 1 instances (quorum 1)`);
    expect(inspected.stdout).toMatch(new RegExp(`^${name(seed)} +held +\\d+s +${fingerprint(lock)}$`, "m"));

    const released = await runCli(["release", "--force", elsewhere, "--prefix", "lock:", "--yes", "--redis", url]);
    expect({ code: released.code, stderr: released.stderr }).toEqual({ code: 0, stderr: "" });
    expect(released.stdout).toBe(`Deleted lock:${elsewhere} on 1 of 1 instances.\n`);
    expect(await client.exists(`lock:${elsewhere}`)).toBe(0);

    // a Cluster has db 0 only: a URL naming another one is never read in db 0
    await dlm.acquire(elsewhere, 60_000);
    const db1 = await runCli(["inspect", elsewhere, "--prefix", "lock:", "--redis", `${url}/1`]);
    expect(db1.code).toBe(3);
    expect(db1.stdout).toContain("unknown, 1 of 1 instances did not answer");
  });

  it("authenticates on every master with the URL's password, and never prints it", async () => {
    await dlm.acquire(elsewhere, 60_000);
    const masters = cluster.servers.map((server) => server.client());
    await Promise.all(masters.map((admin) => admin.config("SET", "requirepass", "hunter2")));
    try {
      const secret = `redis://:hunter2@127.0.0.1:${seed.port}`;
      const listed = await runCli(["list", "--prefix", "lock:", "--redis", secret]);
      expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: "" });
      expect(listed.stdout).toMatch(new RegExp(`^${elsewhere} +held 1/1 `, "m"));
      const inspected = await runCli(["inspect", elsewhere, "--prefix", "lock:", "--json", "--redis", secret]);
      expect(JSON.parse(inspected.stdout).instances[0]).toMatchObject({ description: name(seed), state: "held" });
      expect(listed.stdout + inspected.stdout).not.toContain("hunter2");
    } finally {
      await Promise.all(masters.map((admin) => admin.config("SET", "requirepass", "")));
    }
  });

  it("finds the lock on another shard for a user that may not run INFO (no partial answer from the seed alone)", async () => {
    const lock = await dlm.acquire(elsewhere, 60_000);
    const admins = cluster.servers.map((server) => server.client());
    await Promise.all(admins.map((admin) => admin.acl("SETUSER", "noinfo", "on", ">pw", "~*", "+@all", "-info")));
    try {
      const noInfo = `redis://noinfo:pw@127.0.0.1:${seed.port}`;
      const listed = await runCli(["list", "--prefix", "lock:", "--redis", noInfo]);
      expect(listed.stdout).toMatch(new RegExp(`^${elsewhere} +held 1/1 `, "m"));
      expect(listed.code).toBe(0);
      const inspected = await runCli(["inspect", elsewhere, "--prefix", "lock:", "--redis", noInfo]);
      expect(inspected.stdout).toContain(`is held by ${fingerprint(lock)} on 1 of 1 instances`);
      expect(inspected.code).toBe(0);
    } finally {
      await Promise.all(admins.map((admin) => admin.acl("DELUSER", "noinfo")));
    }
  });

  it("names a node taken for a plain server (its user may run neither CLUSTER SLOTS nor INFO): MOVED is no outage, exit 2", async () => {
    await dlm.acquire(elsewhere, 60_000);
    const admins = cluster.servers.map((server) => server.client());
    await Promise.all(
      admins.map((admin) => admin.acl("SETUSER", "noslots", "on", ">pw", "~*", "&*", "+@all", "-cluster", "-info")),
    );
    try {
      const noSlots = `redis://noslots:pw@127.0.0.1:${seed.port}`;
      const inspected = await runCli(["inspect", elsewhere, "--prefix", "lock:", "--redis", noSlots]);
      // it was exit 3 and "unknown, 1 of 1 instances did not answer", an outage's
      expect({ code: inspected.code, verdict: inspected.stdout.split("\n")[0] }).toEqual({
        code: 2,
        verdict: `${elsewhere} (key lock:${elsewhere}): no verdict (quorum 1): 1 of 1 instances refused the CLI, a configuration to fix (below), not an outage.`,
      });
      expect(inspected.stdout).toMatch(
        new RegExp(
          `^127\\.0\\.0\\.1:${seed.port}/0 +refused +- +- +is a Cluster node \\(MOVED\\) taken for a plain server: it refused CLUSTER SLOTS \\(may its user run it\\?\\), or could not be reached at the start$`,
          "m",
        ),
      );
    } finally {
      await Promise.all(admins.map((admin) => admin.acl("DELUSER", "noslots")));
    }
  });

  it("a node that answers CLUSTER SLOTS only after --timeout did not answer (exit 3), never taken for a plain server", async () => {
    await dlm.acquire(elsewhere, 60_000);
    // a loaded node: every answer on the CLI's connections waits in the proxy
    const proxy = await startDelayProxy(seed.port);
    proxy.holdNewReplies = true;
    // core's first command to a plain client (INFO server, who it is): the CLI took the node for a plain server
    let askedAsPlain!: () => void;
    const asPlain = new Promise<void>((resolve) => {
      askedAsPlain = resolve;
    });
    proxy.holdCommandsWhen = (chunk) => {
      if (chunk.toString().includes("\r\nserver\r\n")) askedAsPlain();
      return false;
    };
    try {
      const run = start(["inspect", elsewhere, "--prefix", "lock:", "--redis", `redis://127.0.0.1:${proxy.port}`]);
      // the late answers arrive once core asks as of a plain server: it then learnt it is a Cluster node
      await Promise.race([asPlain.then(() => proxy.releaseReplies()), run.exited]);
      const code = await run.exited;
      // it was exit 2, "redlock-kit: instances[0] (127.0.0.1:…/0) is a Redis Cluster node: …"
      expect({ code, stderr: run.stderr }).toEqual({ code: 3, stderr: "" });
      expect(run.stdout).toContain(`${elsewhere} (key lock:${elsewhere}): unknown, 1 of 1 instances did not answer`);
      expect(run.stdout).toMatch(
        new RegExp(`^127\\.0\\.0\\.1:${proxy.port}/0 +unknown +- +- +No answer within 1000 ms$`, "m"),
      );

      // nor scanned as one: list says why it could not be
      proxy.holdNewReplies = true;
      const listed = await runCli(["list", "--prefix", "lock:", "--redis", `redis://127.0.0.1:${proxy.port}`]);
      expect({ code: listed.code, stdout: listed.stdout }).toEqual({
        code: 3,
        stdout: 'Cannot tell which locks match "*": fewer than a quorum of instances could be scanned.\n',
      });
      expect(listed.stderr).toBe(
        `redlock-kit: 127.0.0.1:${proxy.port}/0 could not be scanned: No answer within 1000 ms\n`,
      );
    } finally {
      await proxy.close();
    }
  });

  // last: it stops a master for good
  it("with a master stopped, the Cluster counts as not scanned (exit 3 when fewer than a quorum could be)", async () => {
    const third = cluster.servers.find((server) => server !== seed && server !== owner) as RedisServer;
    const lock = await new Redlock([client, ...plain.servers.map((server) => server.client())], {
      keyPrefix: "lock:",
    }).acquire(elsewhere, 60_000);
    const survivors = [seed, owner].map((server) => server.client());
    const coverage = (required: "yes" | "no") =>
      Promise.all(survivors.map((admin) => admin.config("SET", "cluster-require-full-coverage", required)));
    // each survivor's own view: the CLI reads the seed's slots, and the lock's key on the owner
    const states = async () =>
      (await Promise.all(survivors.map((admin) => admin.cluster("INFO")))).map(
        (info) => /cluster_state:(\w+)/.exec(info)?.[1],
      );

    // Redis's default: a master down fails the whole Cluster (cluster_state:fail). The CLI exited
    // 13 without a word: ioredis's ready check failed, the Cluster client ended, and core's reads
    // waited for it on their unref'd per-instance bound with nothing else alive
    await coverage("yes");
    await third.kill();
    await expect.poll(states).toEqual(["fail", "fail"]);
    const failed = await runCli(["list", "never:*", "--prefix", "lock:", "--redis", url]);
    expect({ code: failed.code, stdout: failed.stdout }).toEqual({ code: 3, stdout: CANNOT_TELL });
    expect(failed.stderr).toContain(`redlock-kit: ${name(seed)} could not be scanned: master 127.0.0.1:${third.port}`);
    // the failed Cluster's own answer, once ioredis stopped retrying it (about 1.6 s), well within
    // --timeout: with --timeout 200 the read waited out its bound, and so had the seed's CLUSTER
    // SLOTS to answer within those 200 ms in a process just started (taken for a plain server when
    // late, and refused as a Cluster node: exit 2)
    const unknown = await runCli(["inspect", elsewhere, "--prefix", "lock:", "--timeout", "10000", "--redis", url]);
    expect(unknown.code).toBe(3);
    expect(unknown.stdout).toContain(`${elsewhere} (key lock:${elsewhere}): unknown, 1 of 1 instances did not answer`);
    expect(unknown.stdout).toMatch(new RegExp(`^${name(seed)} +unknown +- +- +CLUSTERDOWN The cluster is down$`, "m"));

    // the other masters go on serving their slots (as the tests' clusters are set up)
    await coverage("no");
    await expect.poll(states).toEqual(["ok", "ok"]);
    const plainUrls = plain.servers.map((server) => `redis://127.0.0.1:${server.port}`);
    const mixed = await runCli(["list", "--prefix", "lock:", "--redis", [url, ...plainUrls].join(",")]);
    expect(mixed.code).toBe(0);
    expect(mixed.stdout).toMatch(new RegExp(`^${elsewhere} +held 3/3 +\\d+s +${fingerprint(lock)} `, "m"));
    expect(mixed.stderr).toContain(`redlock-kit: ${name(seed)} could not be scanned: master 127.0.0.1:${third.port}`);

    // a Cluster client that has already dropped the stopped master's connection (ioredis removes a
    // node whose connection ended, as the CLI's own first commands can make it do before the scan):
    // the other masters are still scanned, what they hold listed
    const dropped = new Cluster([{ host: "127.0.0.1", port: seed.port }]);
    try {
      await expect.poll(() => dropped.status).toBe("ready");
      // its node clients connect at their first command: the stopped master's fails, and ends
      const stopped = dropped.nodes("master").find((node) => node.options.port === third.port);
      await stopped?.ping().catch(() => {});
      await expect.poll(() => dropped.nodes("master").map((node) => node.options.port)).not.toContain(third.port);
      const scanned = await scanResources([dropped], "lock:", "*", 1000);
      expect(scanned.resources).toEqual([elsewhere]);
      expect(scanned.failed).toEqual([{ instance: 0, error: `master 127.0.0.1:${third.port}: not connected` }]);
    } finally {
      dropped.disconnect();
    }

    const alone = await runCli(["list", "--prefix", "lock:", "--redis", url]);
    expect(alone.code).toBe(3);
    expect(alone.stdout).toMatch(new RegExp(`^${elsewhere} +held 1/1 `, "m"));
    expect(alone.stderr).toContain(`redlock-kit: ${name(seed)} could not be scanned: master 127.0.0.1:${third.port}`);

    const nothing = await runCli(["list", "never:*", "--prefix", "lock:", "--redis", url]);
    expect(nothing.code).toBe(3);
    expect(nothing.stdout).toBe(CANNOT_TELL);
  });
});
