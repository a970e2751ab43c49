import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { runCli, start } from "./helpers/run-cli.js";

/**
 * A lock key holding data of another type (a hash, a list: another application uses the name, or
 * the prefix is not the Redlock's) answers WRONGTYPE, which core counts as an unknown instance.
 */
const cluster = useRedisServers(3);
let clients: Redis[] = [];
let env: { REDIS_URL: string };

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  env = { REDIS_URL: cluster.servers.map((server) => `redis://127.0.0.1:${server.port}`).join(",") };
});

afterEach(async () => {
  await Promise.all(clients.map((client) => client.flushall()));
});

const PROCESS_TIMEOUT = { timeout: 90_000 };
const port = (index: number) => (cluster.servers[index] as RedisServer).port;
const fingerprint = (value: string) => createHash("sha256").update(value).digest("hex").slice(0, 8);

/** The key on each instance: "lock" (a lock's string), "hash" (data of another type) or "free". */
async function keys(key: string, kinds: ("lock" | "hash" | "free")[]) {
  await Promise.all(
    kinds.map((kind, index) => {
      const client = clients[index] as Redis;
      if (kind === "lock") return client.set(key, "holder-1", "PX", 60_000);
      if (kind === "hash") return client.hset(key, "field", "another app's");
      return undefined;
    }),
  );
}
const types = (key: string) => Promise.all(clients.map((client) => client.type(key)));

describe("redlock-kit on data of another type at a lock's key", PROCESS_TIMEOUT, () => {
  it("inspect shows it as what it is, never as an instance that did not answer", async () => {
    await keys("lock:job", ["lock", "lock", "hash"]);
    const held = await runCli(["inspect", "job", "--prefix", "lock:"], env);
    expect(held.code).toBe(0);
    const [verdict] = held.stdout.split("\n") as [string];
    const [before, after] = verdict.split(/ for \d+s more\. /);
    expect({ before, after }).toEqual({
      before: `job (key lock:job) is held by ${fingerprint("holder-1")} on 2 of 3 instances (quorum 2)`,
      after:
        "Data of another type at the key on 1 of 3 instances (WRONGTYPE): not a lock of this library, left as it is.",
    });
    expect(held.stdout).toMatch(
      new RegExp(
        `^127\\.0\\.0\\.1:${port(2)}/0 +not a lock +- +- +data of another type at the key \\(WRONGTYPE\\)$`,
        "m",
      ),
    );
    expect(held.stdout).not.toMatch(/unknown|did not answer/);

    await keys("lock:stale", ["hash", "free", "free"]);
    const free = await runCli(["inspect", "stale", "--prefix", "lock:"], env);
    expect(free.code).toBe(1);
    expect(free.stdout.split("\n")[0]).toBe(
      "stale (key lock:stale) is free (quorum 2). Data of another type at the key on 1 of 3 instances (WRONGTYPE): not a lock of this library, left as it is.",
    );
  });

  it("inspect exits 2 when it leaves no verdict: not a lock, not an outage (3) either", async () => {
    await keys("lock:job", ["lock", "hash", "hash"]);
    await keys("lock:other", ["hash", "hash", "hash"]);
    const runs = await Promise.all(["job", "other"].map((name) => runCli(["inspect", name, "--prefix", "lock:"], env)));
    for (const [index, count] of [2, 3].entries()) {
      const run = runs[index] as { code: number; stdout: string };
      const name = ["job", "other"][index];
      expect({ code: run.code, verdict: run.stdout.split("\n")[0] }).toEqual({
        code: 2,
        verdict: `${name} (key lock:${name}): data of another type at the key on ${count} of 3 instances (WRONGTYPE): not a lock of this library, and no holder can have the quorum (2). Another application uses the name, or --prefix is not the Redlock's keyPrefix.`,
      });
    }
  });

  it("inspect --json and release --json say so too: a verdict, each instance's problem, release's reason", async () => {
    await keys("lock:other", ["lock", "hash", "hash"]);
    const inspected = await runCli(["inspect", "other", "--prefix", "lock:", "--json"], env);
    const view = JSON.parse(inspected.stdout);
    // state stays core's ("unknown"), as before; verdict is the CLI's, as the text says it
    expect({ code: inspected.code, state: view.state, verdict: view.verdict }).toEqual({
      code: 2,
      state: "unknown",
      verdict: "not a lock",
    });
    expect(view.instances.map((instance: { problem?: string }) => instance.problem ?? null)).toEqual([
      null,
      "other type",
      "other type",
    ]);

    const released = await runCli(["release", "--force", "other", "--prefix", "lock:", "--yes", "--json"], env);
    const refusal = JSON.parse(released.stdout);
    expect({ code: released.code, deleted: refusal.deleted, verdict: refusal.verdict }).toEqual({
      code: 2,
      deleted: 0,
      verdict: "not a lock",
    });
    expect(refusal.reason).toMatch(/^other \(key lock:other\): data of another type at the key on 2 of 3 instances/);
    expect(await types("lock:other")).toEqual(["string", "hash", "hash"]);
  });

  it("list marks the instance, and a row that cannot be a lock, never as silent", async () => {
    await keys("lock:job", ["lock", "lock", "hash"]);
    await keys("lock:other", ["lock", "hash", "hash"]);
    const { code, stdout } = await runCli(["list", "--prefix", "lock:"], env);
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split("\n");
    expect(lines[1]).toMatch(/^job +held 2\/3 +\d+s +\w{8} +\d+s +\d+s +!$/);
    expect(lines[2]).toMatch(/^other +not a lock \(2\/3 other type\) +- +\w{8} +\d+s +! +!$/);
    expect(lines[3]).toBe("! data of another type at the key: not a lock of this library");
  });

  it("list leaves out a key that holds no lock anywhere once read: its string gone since the SCAN, data of another type elsewhere", async () => {
    const proxy = await startDelayProxy(port(0));
    try {
      await keys("lock:gone", ["lock", "hash", "free"]);
      const urls = [`redis://127.0.0.1:${proxy.port}`, ...env.REDIS_URL.split(",").slice(1)].join(",");
      // instance 0's read of the key waits until the key is gone there (it expired, or was released)
      proxy.holdCommandsWhen = (chunk) => /\r\nget\r\n/i.test(chunk.toString());
      const run = start(["list", "--prefix", "lock:", "--redis", urls]);
      await expect.poll(() => proxy.heldCommandBytes > 0).toBe(true);
      await clients[0]?.del("lock:gone");
      proxy.releaseCommands();
      // it was listed as a free row with exit 0: a lock found, where there is none
      expect({ code: await run.exited, stdout: run.stdout }).toEqual({ code: 1, stdout: 'No locks match "*".\n' });
    } finally {
      await proxy.close();
    }
  });

  it("release --force leaves it as it is, saying so, and refuses a key that cannot be a lock (exit 2)", async () => {
    await keys("lock:job", ["lock", "lock", "hash"]);
    const job = await runCli(["release", "--force", "job", "--prefix", "lock:", "--yes"], env);
    expect({ code: job.code, stdout: job.stdout }).toEqual({
      code: 0,
      stdout: "Deleted lock:job on 2 of 3 instances.\n",
    });
    expect(job.stderr).toBe(
      `redlock-kit: 127.0.0.1:${port(2)}/0 holds data of another type at lock:job (WRONGTYPE), not a lock of this library: left as it is.\n`,
    );
    expect(await types("lock:job")).toEqual(["none", "none", "hash"]);

    await keys("lock:other", ["lock", "hash", "hash"]);
    const other = await runCli(["release", "--force", "other", "--prefix", "lock:", "--yes"], env);
    expect(other.code).toBe(2);
    expect(other.stdout).toMatch(
      /not a lock of this library, and no holder can have the quorum \(2\)\. .* Nothing deleted\.\n$/,
    );
    expect(await types("lock:other")).toEqual(["string", "hash", "hash"]);

    await keys("lock:stale", ["hash", "free", "free"]);
    const stale = await runCli(["release", "--force", "stale", "--prefix", "lock:", "--yes"], env);
    expect({ code: stale.code, stderr: stale.stderr }).toEqual({ code: 1, stderr: "" });
    expect(stale.stdout).toMatch(/is free \(quorum 2\)\. .* left as it is\. Nothing to delete\.\n$/);
    expect(await types("lock:stale")).toEqual(["hash", "none", "none"]);
  });
});
