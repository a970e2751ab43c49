/**
 * A server whose role changes while Redlock is connected to it (REPLICAOF, which keeps its client
 * connections open): Redlock reads the role with the server's identity, once per connection
 * (src/quorum/server-identity.ts). The documented limit is pinned here (README, "A replica given as
 * an instance"; docs/reliability.md C12), and a demoted server's subscribers, to which Redis passes
 * its new master's PUBLISH on, hear no hand-over of another instance's.
 */
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { queueOf } from "#test-helpers/queues.js";
import { freePort, type RedisServer, startReplicaOf, startServers } from "#test-helpers/redis.js";
import { LockUnavailableError, Redlock } from "../src/index.js";

const TTL = 10_000;
const closing: { quit(): Promise<unknown> }[] = [];
const stopping: RedisServer[] = [];

afterEach(async () => {
  await Promise.all(closing.splice(0).map((thing) => thing.quit()));
  await Promise.all(stopping.splice(0).map((server) => server.stop()));
});

function track<T extends { quit(): Promise<unknown> }>(thing: T): T {
  closing.push(thing);
  return thing;
}

/** An instance that never answers (a client of `server`'s, through a proxy to no server): the other two must both vote. */
async function down(server: RedisServer): Promise<Redis> {
  const proxy = await startDelayProxy(await freePort());
  track({ quit: () => proxy.close() });
  return server.client({ port: proxy.port });
}

const role = async (client: Redis) => /role:(\w+)/.exec(await client.info("replication"))?.[1];
const causesOf = (error: unknown) =>
  (error as LockUnavailableError).causes.map(({ instance, error }) => [instance, error.message]);

describe("a replica promoted while connected (REPLICAOF NO ONE)", () => {
  it("stays refused until its connection is replaced, then votes", async () => {
    const [master] = await startServers(1);
    stopping.push(master as RedisServer);
    const replica = await startReplicaOf((master as RedisServer).port);
    stopping.push(replica);
    const admin = replica.client();
    const onReplica = replica.client();
    const dlm = track(
      new Redlock([(master as RedisServer).client(), onReplica, await down(replica)], { retryCount: 0 }),
    );
    const refusal = `instances[1] (127.0.0.1:${replica.port}/0) is a replica of 127.0.0.1:${(master as RedisServer).port} (role:slave): its keys are its master's copy and it takes no writes; give Redlock masters only`;
    const first = await dlm.acquire("job", TTL).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(LockUnavailableError);
    expect(causesOf(first)).toContainEqual([1, refusal]);

    await admin.replicaof("NO", "ONE");
    await expect.poll(() => role(admin)).toBe("master");
    // the role was read when its connection opened: still refused, with the reason read then
    const promoted = await dlm.acquire("job", TTL).catch((e: unknown) => e);
    expect(promoted).toBeInstanceOf(LockUnavailableError);
    expect(causesOf(promoted)).toContainEqual([1, refusal]);

    // a new connection (here CLIENT KILL; a restart, a network reset) is asked again: now a master
    const reconnected = new Promise((resolve) => onReplica.once("ready", resolve));
    await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    await reconnected;
    const lock = await dlm.acquire("job", TTL);
    expect(await admin.get("job")).toBe(lock.value);
    expect(await lock.release()).toBe(true);
  });
});

const linkUp = async (client: Redis) => (await client.info("replication")).includes("master_link_status:up");

describe("a master demoted while connected (REPLICAOF host port)", () => {
  it("a hand-over its new master publishes, relayed to its subscribers, is no grant of its own", async () => {
    const [a, b, c] = (await startServers(3)) as [RedisServer, RedisServer, RedisServer];
    stopping.push(a, b, c);
    const [adminA, adminB, adminC] = [a.client(), b.client(), c.client()];
    // the waiter's Redlock: [a, b, c], quorum 2; polling once a minute, so that only a hand-over wakes it
    const waiter = track(new Redlock([a.client(), b.client(), c.client()], { retryDelay: 60_000, retryJitter: 0 }));
    // every entry says who it is (b: a master)
    await (await waiter.acquire("warm", TTL)).release();

    // held on a, b and c by another Redlock: the waiter, refused everywhere, queues on all three
    const held = await track(new Redlock([a.client(), b.client(), c.client()])).acquire("job", TTL);
    // a ttl long enough that the wait below (b's sync) leaves it more than half: it takes grants, no claim
    const waiting = waiter.acquire("job", 60_000, { wait: 60_000, signal: AbortSignal.timeout(15_000) });
    await expect
      .poll(() => Promise.all([adminA, adminB, adminC].map((client) => client.zcard(queueOf("job")))))
      .toEqual([1, 1, 1]);
    // b becomes a replica of a: its data is a's copy, and Redis keeps the Redlock's connections to
    // it open (the waiter's subscriber among them)
    await adminB.replicaof("127.0.0.1", String(a.port));
    await expect.poll(() => linkUp(adminB)).toBe(true);
    // c lost the holder's key (it expired there): only a hands the key over when the holder
    // releases (b answers READONLY), and b relays a's message to the waiter's subscriber there
    await adminC.del("job");
    await held.release();
    const lock = await waiting;
    // before: a's one message counted as a's grant and as b's, a quorum of two: the waiter held the
    // lock with its key on a alone ("expected null to be …" for c). Handed over on a only, it must
    // claim, and its claim takes c
    expect(await adminA.get("job")).toBe(lock.value);
    expect(await adminC.get("job")).toBe(lock.value);
    await lock.release();
  });
});
