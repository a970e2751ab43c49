/**
 * The HTTP policy serving a Fetch-API `Response` (FetchResponseTracker), without any server: the
 * test plays the server, reading or cancelling the body and aborting the request's signal.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { arrival, countReleases, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { createHttpLockPolicy, FetchResponseTracker, type Lock, Redlock } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  // the first test's route (one attempt at a 1 s lock) must not wait for the client's INFO
  await warmUp(dlm);
});

afterEach(async () => {
  await redis.flushall();
});

afterAll(async () => {
  await dlm?.quit();
});

const source = { params: {}, query: {}, body: undefined, headers: {} };

/** Takes the lock of `key` for a request whose client leaves when `client` aborts. */
async function acquire(key: string, client: AbortController, ttl = 1000) {
  const tracker = new FetchResponseTracker(client.signal);
  const outcome = await createHttpLockPolicy(dlm, { ttl }).route(key).beginTracked(source, tracker);
  if (outcome.kind !== "acquired") throw new Error(`expected the lock, got ${outcome.kind}`);
  return { tracker, lock: outcome.lock };
}

/** A body whose chunks the test writes. */
function drivenBody() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
  });
  return { body, controller };
}

/** Why `lock` was lost: its signal's reason, also when it aborted before this was asked. */
const lostReason = (lock: Lock) => aborted(lock.signal).then(() => lock.signal.reason);

describe("FetchResponseTracker", () => {
  it("stops extending when the request signal aborts in the middle of a body nobody cancels: the key expires within one ttl and lock.signal aborts", async () => {
    const client = new AbortController();
    const { tracker, lock } = await acquire("fetch:1", client);
    const lost = lostReason(lock);
    const { body, controller } = drivenBody();
    const reader = tracker.respond(new Response(body)).body?.getReader();
    controller.enqueue(new Uint8Array([1]));
    expect((await reader?.read())?.value).toEqual(new Uint8Array([1]));
    client.abort();
    // a lock still auto-extended (until the Redlock's 60 s maxHoldMs) fails as never lost
    expect(await arrival(lost, "the lock's loss")).toMatchObject({ name: "LockLostError" });
    await expect.poll(() => redis.get("fetch:1")).toBeNull();
    // the server gives up on the body at last: that is no end of the handler, nothing is released
    const releases = countReleases("fetch:1");
    try {
      await reader?.cancel();
      // a release would have been sent on this connection before the next acquisition's commands
      await (await dlm.acquire("fetch:1:after", 1000)).release();
      expect(releases.count).toBe(0);
    } finally {
      releases.stop();
    }
  });

  it("keeps the lock through the last chunk and releases it when the body has been read to its end", async () => {
    const { tracker } = await acquire("fetch:2", new AbortController());
    const { body, controller } = drivenBody();
    const reader = tracker.respond(new Response(body, { status: 201, headers: { "x-a": "1" } })).body?.getReader();
    controller.enqueue(new Uint8Array([1]));
    controller.close();
    expect((await reader?.read())?.done).toBe(false);
    expect(await redis.get("fetch:2")).not.toBeNull();
    const released = nextRelease("fetch:2");
    expect((await reader?.read())?.done).toBe(true);
    expect((await arrival(released, "the lock's release")).released).toBe(true);
  });

  it("stops extending when the server cancels the body between two reads, and cancels the handler's stream: the lock expires, not released under a producer that may still run", async () => {
    const { tracker, lock } = await acquire("fetch:7", new AbortController());
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull: (controller) => controller.enqueue(new Uint8Array([1])),
      cancel: () => {
        cancelled = true;
      },
    });
    const reader = tracker.respond(new Response(body)).body?.getReader();
    expect((await reader?.read())?.done).toBe(false);
    const released = nextRelease("fetch:7").then(() => "released");
    const expired = lostReason(lock).then(() => "expired");
    await reader?.cancel();
    expect(cancelled).toBe(true);
    expect(tracker.clientLeft).toBe(true);
    // auto-extended until the cancel: only its end lets the 1000 ms lock expire
    expect(await arrival(Promise.race([released, expired]), "the lock's end (expiry or release)")).toBe("expired");
    await expect.poll(() => redis.get("fetch:7")).toBeNull();
  });

  it("keeps the status and headers of the response it follows", async () => {
    const { tracker } = await acquire("fetch:3", new AbortController());
    const sent = tracker.respond(new Response("ok", { status: 201, statusText: "Made", headers: { "x-a": "1" } }));
    expect([sent.status, sent.statusText, sent.headers.get("x-a")]).toEqual([201, "Made", "1"]);
    const released = nextRelease("fetch:3");
    expect(await sent.text()).toBe("ok");
    expect((await arrival(released, "the lock's release")).released).toBe(true);
  });

  it("releases the lock when the body fails", async () => {
    const { tracker } = await acquire("fetch:4", new AbortController());
    const { body, controller } = drivenBody();
    const sent = tracker.respond(new Response(body));
    const released = nextRelease("fetch:4");
    controller.error(new Error("disk gone"));
    await expect(sent.text()).rejects.toThrow("disk gone");
    expect((await arrival(released, "the lock's release")).released).toBe(true);
  });

  it("given a response once the client has left, releases at once for a plain body and lets the lock expire under a body still produced, which it cancels", async () => {
    const plain = new AbortController();
    const first = await acquire("fetch:8", plain);
    plain.abort();
    const released = nextRelease("fetch:8");
    const sent = first.tracker.respond(new Response('{"done":true}', { status: 201, headers: { "x-a": "1" } }));
    // nobody reads it: the server gets the status and headers alone
    expect([sent.status, sent.headers.get("x-a"), sent.body]).toEqual([201, "1", null]);
    // before: a body the server cancelled unread released nothing, and the lock lapsed a ttl later
    expect((await arrival(released, "the lock's release")).released).toBe(true);

    const streaming = new AbortController();
    const second = await acquire("fetch:9", streaming);
    streaming.abort();
    let cancelled!: () => void;
    const cancel = new Promise<void>((resolve) => (cancelled = resolve));
    // a producer that has not written yet (a stream() callback still at work)
    const producing = new ReadableStream<Uint8Array>({
      pull: () => new Promise<void>(() => {}),
      cancel: () => cancelled(),
    });
    const releasedToo = nextRelease("fetch:9").then(() => "released");
    const expired = lostReason(second.lock).then(() => "expired");
    second.tracker.respond(new Response(producing));
    await arrival(cancel, "the body's cancel");
    expect(await arrival(Promise.race([releasedToo, expired]), "the lock's end (expiry or release)")).toBe("expired");
  });

  it("given a response once the client has left whose producer enqueues at every pull, cancels it and lets the lock expire (no read for ever)", async () => {
    const client = new AbortController();
    const { tracker, lock } = await acquire("fetch:10", client);
    client.abort();
    let cancelled!: () => void;
    const cancel = new Promise<void>((resolve) => (cancelled = resolve));
    // each read answered at once, in a microtask: before, the read loop starved the timer that
    // ends it and the process ran out of memory
    const endless = new ReadableStream<Uint8Array>({
      pull: (controller) => controller.enqueue(new Uint8Array([1])),
      cancel: () => cancelled(),
    });
    const released = nextRelease("fetch:10").then(() => "released");
    const expired = lostReason(lock).then(() => "expired");
    tracker.respond(new Response(endless));
    await arrival(cancel, "the body's cancel");
    expect(await arrival(Promise.race([released, expired]), "the lock's end (expiry or release)")).toBe("expired");
  });

  it("releases the lock of a plain body the server cancels once its client left, and lets a body still produced expire", async () => {
    const plain = new AbortController();
    const first = await acquire("fetch:11", plain);
    const released = nextRelease("fetch:11");
    const sent = first.tracker.respond(new Response('{"done":true}'));
    plain.abort();
    // the server no longer sends it (its client left): the handler is done all the same
    await sent.body?.cancel();
    expect((await arrival(released, "the lock's release")).released).toBe(true);

    const streaming = new AbortController();
    const second = await acquire("fetch:12", streaming);
    let cancelled = false;
    const producing = new ReadableStream<Uint8Array>({
      pull: () => new Promise<void>(() => {}),
      cancel: () => {
        cancelled = true;
      },
    });
    const releasedToo = nextRelease("fetch:12").then(() => "released");
    const expired = lostReason(second.lock).then(() => "expired");
    const streamed = second.tracker.respond(new Response(producing));
    streaming.abort();
    await streamed.body?.cancel();
    expect(cancelled).toBe(true);
    expect(await arrival(Promise.race([releasedToo, expired]), "the lock's end (expiry or release)")).toBe("expired");
  });

  it("follows an answer put in place of the one it followed: the unread body is cancelled, no client counted as gone, and the lock released once the new one has been read", async () => {
    const { tracker } = await acquire("fetch:13", new AbortController());
    let cancelled = false;
    const producing = new ReadableStream<Uint8Array>({
      pull: () => new Promise<void>(() => {}),
      cancel: () => {
        cancelled = true;
      },
    });
    tracker.follow(new Response(producing));
    // an error page instead (a middleware around the route, after it returned)
    const sent = tracker.follow(new Response("<h1>Not here</h1>", { status: 404 }));
    expect(cancelled).toBe(true);
    expect(tracker.clientLeft).toBe(false);
    expect(await redis.get("fetch:13")).not.toBeNull();
    const released = nextRelease("fetch:13");
    expect([sent.status, await sent.text()]).toEqual([404, "<h1>Not here</h1>"]);
    expect((await arrival(released, "the lock's release")).released).toBe(true);
    // over: what is set after that is handed on as it is
    const late = new Response("late");
    expect(tracker.follow(late)).toBe(late);

    const second = await acquire("fetch:14", new AbortController());
    const releasedToo = nextRelease("fetch:14");
    second.tracker.follow(new Response("route"));
    // a redirect has no body: over at once
    second.tracker.follow(new Response(null, { status: 301, headers: { location: "/new" } }));
    expect((await arrival(releasedToo, "the lock's release")).released).toBe(true);
  });

  it("goes on following a body under other headers, and one a reader pipes into the new answer, without cancelling it", async () => {
    const { tracker } = await acquire("fetch:15", new AbortController());
    const { body, controller } = drivenBody();
    const sent = tracker.follow(new Response(body));
    const rewrapped = new Response(sent.body, { status: 201, headers: { "x-served-by": "edge" } });
    expect(tracker.follow(rewrapped)).toBe(rewrapped);
    const piped = new Response(rewrapped.body?.pipeThrough(new TransformStream()));
    const final = tracker.follow(piped);
    controller.enqueue(new Uint8Array([1]));
    controller.close();
    const released = nextRelease("fetch:15");
    expect(new Uint8Array(await final.arrayBuffer())).toEqual(new Uint8Array([1]));
    expect((await arrival(released, "the lock's release")).released).toBe(true);
  });

  it("counts no client as gone when the body it discards wraps another tracker's (a guard around the route follows the route's answer)", async () => {
    const route = await acquire("fetch:16", new AbortController());
    const guard = await acquire("fetch:17", new AbortController());
    let cancelled = false;
    const producing = new ReadableStream<Uint8Array>({
      pull: () => new Promise<void>(() => {}),
      cancel: () => {
        cancelled = true;
      },
    });
    guard.tracker.follow(route.tracker.follow(new Response(producing)));
    const sent = guard.tracker.follow(route.tracker.follow(new Response("<h1>Not here</h1>", { status: 404 })));
    expect(cancelled).toBe(true);
    expect([route.tracker.clientLeft, guard.tracker.clientLeft]).toEqual([false, false]);
    const released = Promise.all([nextRelease("fetch:16"), nextRelease("fetch:17")]);
    expect(await sent.text()).toBe("<h1>Not here</h1>");
    const [routeRelease, guardRelease] = await arrival(released, "the locks' releases");
    expect([routeRelease.released, guardRelease.released]).toEqual([true, true]);
  });

  it("releases at once a response without a body, or one whose body will not be sent", async () => {
    const first = await acquire("fetch:5", new AbortController());
    const released = nextRelease("fetch:5");
    first.tracker.respond(new Response(null, { status: 204 }));
    expect((await arrival(released, "the lock's release")).released).toBe(true);
    const second = await acquire("fetch:6", new AbortController());
    const releasedToo = nextRelease("fetch:6");
    second.tracker.respond(new Response("unsent"), false);
    expect((await arrival(releasedToo, "the lock's release")).released).toBe(true);
  });
});
