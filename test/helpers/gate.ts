import type { ClientRequest, IncomingMessage } from "node:http";
import { PassThrough } from "node:stream";
import { expect } from "vitest";

/** A gate the test opens: a critical section (a handler, a stream's producer) that waits on `opened` ends only then. */
export function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

/**
 * A push-based producer of streamed bodies, the critical section of a HEAD test: `produce()` starts
 * one (counted in `state`), which writes whether or not anyone reads, and ends its stream once the
 * test calls `open()`. `produceWeb()` is the same producer behind a web `ReadableStream`; a cancel
 * stops its writes, not its work, which goes on until `open()`; `produceWeb(false)` writes nothing
 * before that (a producer still preparing its first chunk).
 */
export function gatedProducer() {
  const done = gate();
  const state = { runs: 0, inside: 0, maxInside: 0 };
  /** Counts one run in, and out once the test opens the gate, when `end` is called. */
  const run = (end: () => void) => {
    state.runs++;
    state.maxInside = Math.max(state.maxInside, ++state.inside);
    void done.opened.then(() => {
      state.inside--;
      end();
    });
  };
  return {
    state,
    open: done.open,
    produce(): PassThrough {
      const out = new PassThrough();
      out.write("first\n");
      run(() => out.end("last\n"));
      return out;
    },
    produceWeb(writesFirst = true): ReadableStream<Uint8Array> {
      const encoder = new TextEncoder();
      let cancelled = false;
      return new ReadableStream<Uint8Array>({
        start(controller) {
          if (writesFirst) controller.enqueue(encoder.encode("first\n"));
          run(() => {
            if (cancelled) return;
            controller.enqueue(encoder.encode(writesFirst ? "last\n" : "first\nlast\n"));
            controller.close();
          });
        },
        cancel() {
          cancelled = true;
        },
      });
    },
  };
}

/**
 * What the adapters' tests of a dropped body (a HEAD request's, a 204's) check once `answer` was
 * asked for: while `producer` runs, the next request for the key (`next()`, disconnected after) is
 * refused with 423 and never enters, and the key is held (`held()`: 1 while Redis has it); once the
 * producer ends, `answer` arrives and the key is released by that end (the routes' ttl is far beyond
 * the poll). Returns the answer; the producer is let go whatever fails.
 */
export async function heldUntilProduced<T>(
  producer: ReturnType<typeof gatedProducer>,
  answer: Promise<T>,
  next: () => { request: ClientRequest; response: Promise<IncomingMessage> },
  held: () => Promise<number>,
): Promise<T> {
  const { state } = producer;
  try {
    await expect.poll(() => state.runs).toBe(1);
    const refused = next();
    refused.request.on("error", () => {});
    try {
      expect((await refused.response).statusCode).toBe(423);
    } finally {
      refused.request.destroy();
    }
    expect(state).toEqual({ runs: 1, inside: 1, maxInside: 1 });
    expect(await held()).toBe(1);
    producer.open();
    const answered = await answer;
    await expect.poll(held).toBe(0);
    expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
    return answered;
  } finally {
    producer.open();
  }
}
