/**
 * A replica given as an instance (`redis-replica:6379` beside its master) answers reads with its
 * master's (possibly stale) copy and refuses writes: it is no vote of a quorum, which is counted
 * over independent masters. Redlock reads its role with its identity (INFO), once per connection.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { closeNodeRedis, connectedNodeRedis } from "#test-helpers/node-redis.js";
import { freePort, type RedisServer, startReplicaOf, useRedisServers } from "#test-helpers/redis.js";
import { LockUnavailableError, Redlock } from "../src/index.js";

const masters = useRedisServers(2);
/** A replica of master 0 from its start. */
let replica: RedisServer;
let direct: Redis[] = [];
/** An admin connection to the replica. */
let copy: Redis;
const closing: { quit(): Promise<unknown> }[] = [];
const TTL = 10_000;

beforeAll(async () => {
  direct = masters.servers.map((server) => server.client());
  replica = await startReplicaOf(port(0));
  copy = replica.client();
  // "noinfo" may not run INFO: its role cannot be known, and it is used as before
  await copy.acl("SETUSER", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info");
  // "oneinfo" may run INFO with one argument, "default", as a Redis 6 answers INFO (one section)
  await copy.acl("SETUSER", "oneinfo", "on", ">pw", "~*", "&*", "+@all", "-info", "+info|default");
}, 30_000);

afterAll(() => replica?.stop());

afterEach(async () => {
  await Promise.all(closing.splice(0).map((thing) => thing.quit()));
  await Promise.all(direct.map((client) => client.flushall()));
  await expect.poll(() => copy.dbsize()).toBe(0);
});

const port = (index: number) => (masters.servers[index] as RedisServer).port;
function track<T extends { quit(): Promise<unknown> }>(thing: T): T {
  closing.push(thing);
  return thing;
}
/** [master 0, its replica, master 1]: quorum 2, from two masters. */
const withReplica = (options: Parameters<RedisServer["client"]>[0] = {}) =>
  track(
    new Redlock([masters.servers[0]?.client(), replica.client(options), masters.servers[1]?.client()] as Redis[], {
      retryCount: 0,
    }),
  );
const refusal = () =>
  `instances[1] (127.0.0.1:${replica.port}/0) is a replica of 127.0.0.1:${port(0)} (role:slave): its keys are its master's copy and it takes no writes; give Redlock masters only`;

/** The process warnings of `code` emitted while `run` runs (and the turn after it). */
async function warningsOf(code: string, run: () => Promise<void>): Promise<Error[]> {
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => {
    if ((warning as { code?: string }).code === code) warnings.push(warning);
  };
  process.on("warning", onWarning);
  try {
    await run();
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off("warning", onWarning);
  }
  return warnings;
}

describe("a replica given as an instance", () => {
  it("its votes are refused, naming it and its master, with one process warning", async () => {
    // the file's first replica: the warning is once per process
    // master 1 unreachable: the replica alone would make a quorum of two with master 0
    const proxy = await startDelayProxy(await freePort());
    track({ quit: () => proxy.close() });
    const dlm = track(
      new Redlock(
        [masters.servers[0]?.client(), replica.client(), masters.servers[1]?.client({ port: proxy.port })] as Redis[],
        { retryCount: 0 },
      ),
    );
    const warnings = await warningsOf("REDLOCK_KIT_REPLICA", async () => {
      for (let i = 0; i < 2; i++) {
        const error = await dlm.acquire("job", TTL).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(LockUnavailableError);
        const causes = (error as LockUnavailableError).causes.map(({ instance, error }) => [instance, error.message]);
        // before: [1, "READONLY You can't write against a read only replica."]
        expect(causes[0]).toEqual([1, refusal()]);
      }
    });
    expect(warnings.map((warning) => warning.message)).toEqual([`redlock-kit: ${refusal()}`]);
    // nothing left behind on master 0 (its key was given back)
    await expect.poll(() => direct[0]?.dbsize()).toBe(0);
  });

  it("inspect() and isLocked() do not count the replica's copy of its master's key", async () => {
    // held on one master of two: no lock, whatever the replica of that master reads
    await direct[0]?.set("job", "holder-1", "PX", 60_000);
    await expect.poll(() => copy.get("job")).toBe("holder-1");
    const dlm = withReplica();
    const view = await dlm.inspect("job");
    // before: "held" on 2 of 3 (quorum 2), master 0 and its copy
    expect({ state: view.state, held: view.held, unknown: view.unknown }).toEqual({
      state: "unknown",
      held: 1,
      unknown: 1,
    });
    expect(view.instances[1]?.error?.message).toBe(refusal());
    await expect(dlm.isLocked("job")).rejects.toBeInstanceOf(LockUnavailableError);
  });

  it("the two masters lock and extend without it: it is sent neither", async () => {
    const dlm = withReplica();
    await copy.config("RESETSTAT");
    const lock = await dlm.acquire("job", TTL);
    await lock.extend(TTL);
    // before: the acquire and the extension reached it and met READONLY
    expect(await copy.info("errorstats")).not.toMatch(/errorstat_READONLY/);
    // a release still goes everywhere (compare-and-delete): on the replica it deletes nothing
    expect(await lock.release()).toBe(true);
  });

  it("on node-redis clients too", async () => {
    await direct[0]?.set("job", "holder-1", "PX", 60_000);
    await expect.poll(() => copy.get("job")).toBe("holder-1");
    const clients = await connectedNodeRedis([port(0), replica.port, port(1)]);
    try {
      const view = await new Redlock(clients).inspect("job");
      // before: "held" on 2 of 3
      expect({ state: view.state, held: view.held }).toEqual({ state: "unknown", held: 1 });
      expect(view.instances[1]?.error?.message).toBe(refusal());
    } finally {
      closeNodeRedis(clients);
    }
  });

  it("a user that may not run INFO reads the replica as before: unchecked, with the warning that says so", async () => {
    // the file's first server that refuses INFO: the warning is once per process
    await direct[0]?.set("job", "holder-1", "PX", 60_000);
    await expect.poll(() => copy.get("job")).toBe("holder-1");
    const warnings = await warningsOf("REDLOCK_KIT_NO_SERVER_ID", async () => {
      const view = await withReplica({ username: "noinfo", password: "pw", enableReadyCheck: false }).inspect("job");
      // its role cannot be known: its copy counts, as the docs say of a server that refuses INFO
      expect({ state: view.state, held: view.held }).toEqual({ state: "held", held: 2 });
    });
    expect(warnings).toHaveLength(1);
  });

  it("a server that refuses INFO with two sections (Redis 6, an ACL) is asked for its default sections", async () => {
    await direct[0]?.set("job", "holder-1", "PX", 60_000);
    await expect.poll(() => copy.get("job")).toBe("holder-1");
    const view = await withReplica({ username: "oneinfo", password: "pw", enableReadyCheck: false }).inspect("job");
    // refused, its role unread, it was counted unchecked: "held" on 2 of 3
    expect({ state: view.state, held: view.held }).toEqual({ state: "unknown", held: 1 });
    expect(view.instances[1]?.error?.message).toBe(refusal());
  });
});
