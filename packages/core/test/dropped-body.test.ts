/** A body the framework drops unsent (HEAD, 204): read to its end, and its end awaited. */
import { PassThrough, Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { drainDroppedBody, sendsNoBody } from "../src/http/dropped-body.js";

const over = (promise: Promise<void> | undefined) => {
  let settled = false;
  void promise?.then(() => {
    settled = true;
  });
  return () => settled;
};

describe("drainDroppedBody", () => {
  it("reads a Node stream nobody reads to its end, and settles only then", async () => {
    const body = new PassThrough();
    const settled = over(drainDroppedBody(body));
    // far more than the highWaterMark: only a reader lets the producer go on
    for (let i = 0; i < 100; i++) body.write(Buffer.alloc(1024));
    await new Promise((resolve) => setImmediate(resolve));
    expect(body.writableLength + body.readableLength).toBe(0);
    expect(settled()).toBe(false);
    body.end();
    await expect.poll(settled).toBe(true);
  });

  it("settles when a Node stream fails or is destroyed", async () => {
    const failing = new PassThrough();
    const destroyed = new PassThrough();
    const both = [drainDroppedBody(failing), drainDroppedBody(destroyed)];
    failing.destroy(new Error("producer failed"));
    destroyed.destroy();
    await expect(Promise.all(both)).resolves.toEqual([undefined, undefined]);
  });

  it("reads a web stream and a Response's body to their end, and settles on a failure", async () => {
    let push: ReadableStreamDefaultController<Uint8Array> | undefined;
    const start = (controller: ReadableStreamDefaultController<Uint8Array>) => {
      push = controller;
    };
    const body = new ReadableStream<Uint8Array>({ start }, { highWaterMark: 0 });
    const settled = over(drainDroppedBody(new Response(body)));
    push?.enqueue(new Uint8Array(8));
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled()).toBe(false);
    push?.close();
    await expect.poll(settled).toBe(true);
    const failing = new ReadableStream({ pull: (c) => c.error(new Error("producer failed")) });
    await expect(drainDroppedBody(failing)).resolves.toBeUndefined();
    await expect(drainDroppedBody(new Response("plain"))).resolves.toBeUndefined();
  });

  it("destroys a Node stream and cancels a web one, and settles, when stop aborts (its client left), also one aborted before", async () => {
    const node = new PassThrough();
    let cancelled = 0;
    const web = () => new ReadableStream({ cancel: () => void cancelled++ });
    const stop = new AbortController();
    const drained = [drainDroppedBody(node, stop.signal), drainDroppedBody(web(), stop.signal)];
    stop.abort();
    await expect(Promise.all(drained)).resolves.toEqual([undefined, undefined]);
    const late = new PassThrough();
    await drainDroppedBody(late, stop.signal);
    await drainDroppedBody(new Response(web()), stop.signal);
    expect({ node: node.destroyed, late: late.destroyed, cancelled }).toEqual({ node: true, late: true, cancelled: 2 });
  });

  it("has nothing to wait for on a plain body, an ended or locked stream", () => {
    for (const body of [undefined, null, "text", Buffer.from("bytes"), { json: true }, new Response(null)]) {
      expect(drainDroppedBody(body)).toBeUndefined();
    }
    const ended = Readable.from([]);
    ended.resume();
    ended.destroy();
    expect(drainDroppedBody(ended)).toBeUndefined();
    const locked = new ReadableStream();
    locked.getReader();
    expect(drainDroppedBody(locked)).toBeUndefined();
  });
});

describe("sendsNoBody", () => {
  it("says which answers carry no body: a HEAD request's, and a 204, 205 or 304 (RFC 9110)", () => {
    const none = [
      ["HEAD", 200],
      ["GET", 204],
      ["POST", 205],
      ["GET", 304],
    ] as const;
    for (const [method, status] of none) expect(sendsNoBody(method, status)).toBe(true);
    for (const [method, status] of [
      ["GET", 200],
      ["POST", 201],
      ["GET", 206],
      ["GET", 302],
      ["DELETE", 404],
    ] as const) {
      expect(sendsNoBody(method, status)).toBe(false);
    }
  });
});
