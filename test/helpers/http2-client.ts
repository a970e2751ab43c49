/**
 * An HTTP/2 client for the adapters' HTTP/2 tests (Fastify's `http2: true`, Koa on `http2.createServer`),
 * on a real loopback session, and their cancelled export. A stream cancelled with `cancel()` is what
 * a browser that navigates away sends: RST_STREAM CANCEL, on which Node's HTTP/2 response emits
 * 'finish' without having ended.
 */
import { type EventEmitter, once } from "node:events";
import http2 from "node:http2";
import { PassThrough } from "node:stream";
import type { Lock } from "@redlock-kit/core";
import { expect } from "vitest";
import { aborted } from "./aborted.js";
import { countReleases } from "./lock-events.js";

/** A session to `url`; its errors (a server closing it) are the test's to see through its streams. */
export function connect(url: string): http2.ClientHttp2Session {
  const session = http2.connect(url);
  session.on("error", () => {});
  return session;
}

/** Starts a request; resolves the stream once its first chunk of body arrived. */
export async function firstChunk(session: http2.ClientHttp2Session, path: string): Promise<http2.ClientHttp2Stream> {
  const stream = session.request({ ":path": path });
  stream.on("error", () => {});
  await once(stream, "data");
  return stream;
}

/** Cancels `stream` as a client that leaves does (RST_STREAM CANCEL). */
export function cancel(stream: http2.ClientHttp2Stream): void {
  stream.close(http2.constants.NGHTTP2_CANCEL);
}

/** Sends `method` `path`; resolves with the status once the body has ended. */
export async function status(
  session: http2.ClientHttp2Session,
  path: string,
  method = "GET",
): Promise<number | undefined> {
  const stream = session.request({ ":method": method, ":path": path });
  stream.end();
  const [headers] = (await once(stream, "response")) as [http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader];
  stream.resume();
  await once(stream, "end");
  return headers[":status"];
}

/**
 * A streamed export whose first run's client cancels it mid-body while its producer goes on
 * writing: `run()` is the handler's work (each run's rows; a second run answers a whole export at
 * once), `check()` the client's side and what must hold then.
 */
export function cancelledExport(resource: string) {
  const produced: PassThrough[] = [];
  const state = { runs: 0, lock: undefined as Lock | undefined, closed: undefined as Promise<unknown> | undefined };
  return {
    run(lock: Lock | undefined | null, res: EventEmitter): PassThrough {
      state.runs++;
      state.lock = lock ?? undefined;
      state.closed = once(res, "close");
      const rows = new PassThrough();
      produced.push(rows);
      rows.write("row 1\n");
      if (state.runs > 1) rows.end();
      return rows;
    },
    async check(session: http2.ClientHttp2Session, path: string): Promise<void> {
      const releases = countReleases(resource);
      try {
        cancel(await firstChunk(session, path));
        await state.closed;
        // released at the cancel, the next request ran its export beside this one's producer
        expect(await status(session, path)).toBe(423);
        // not extended once the client left: the lock lapses
        await aborted((state.lock as Lock).signal);
        expect(releases.calls).toBe(0);
        expect(state.runs).toBe(1);
      } finally {
        releases.stop();
      }
    },
    stop(): void {
      for (const rows of produced) rows.destroy();
    },
  };
}
