/**
 * The holder's remaining ttl that a refused acquisition reports (`retryAfterMs`, `Retry-After`).
 */
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockContentionError, Redlock } from "../src/index.js";

const redis = useRedisServers(1);
let proxy: DelayProxy | undefined;

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

describe("a one-key acquisition refused by SET NX GET", () => {
  it("whose holder's key is gone when PTTL asks (released or expired meanwhile) says try again at once, not the lock's ttl", async () => {
    const direct = redis.servers[0]?.client() as Redis;
    proxy = await startDelayProxy(redis.servers[0]?.port as number);
    const client = redis.servers[0]?.client({ port: proxy.port }) as Redis;
    const dlm = new Redlock([client], { retryCount: 0, instanceTimeout: 30_000 });
    // the connection is open and its server known: the next attempt is one SET NX GET
    await (await dlm.acquire("gone:warm-up", 60_000)).release();
    await direct.set("gone", "other", "PX", 60_000);
    proxy.holdReplies();
    const acquiring = dlm.acquire("gone", 60_000).catch((e: unknown) => e);
    // the SET was refused (its reply is held back); the holder releases before PTTL is asked
    await expect.poll(() => proxy?.heldReplyBytes).toBeGreaterThan(0);
    await direct.del("gone");
    proxy.releaseReplies();
    const error = await acquiring;
    expect(error).toBeInstanceOf(LockContentionError);
    expect((error as LockContentionError).retryAfterMs).toBe(1);
    expect((error as LockContentionError).headers).toEqual({ "Cache-Control": "no-store", "Retry-After": "1" });
    client.disconnect();
  });
});
