import { finished, Readable } from "node:stream";
import type { ReadableStream as NodeWebStream } from "node:stream/web";
import { rememberWhole } from "./whole-body.js";

/**
 * Whether the answer to a `method` request with `status` carries no body, whatever the handler gave
 * it: a HEAD request's, and a 204, 205 or 304 (RFC 9110). A framework drops such a body unsent
 * (Koa, Fastify's 204, Nest on Fastify) while a streamed body's producer goes on as for a 200: the
 * adapter follows it (`HeldRoute.followDropped`, `followHandedOn`).
 */
export function sendsNoBody(method: string, status: number): boolean {
  return method === "HEAD" || status === 204 || status === 205 || status === 304;
}

/**
 * A response body the framework drops unsent (a HEAD request's: it answers with the GET route's
 * headers only; a 204's), read to its end with the data discarded, or `undefined` when there is nothing to
 * wait for (not a stream, or one already over or read by someone else). The promise settles, never
 * rejects, once the stream has ended, failed or been destroyed. A streamed body's producer is the
 * handler's work going on after the response, as for a GET: the lock must wait for it, and it must
 * be read to make progress (a push-based producer blocks on backpressure otherwise).
 *
 * Takes a Node `Readable`, a web `ReadableStream`, or a `Response` (its body). A body built from a
 * string or buffer ends at once.
 *
 * `stop` aborts when nobody waits for the answer any more (its client left): the body is then
 * destroyed (a web one cancelled), as a framework stops a GET's body whose reader left, which tells
 * its producer; an endless one (server-sent events) would be read for ever otherwise.
 */
export function drainDroppedBody(body: unknown, stop?: AbortSignal): Promise<void> | undefined {
  if (body === null || typeof body !== "object") return undefined;
  if (isNodeReadable(body)) return drainNode(body, stop);
  const response = isResponse(body) ? body : undefined;
  const stream = response ? responseBody(response) : body;
  return isWebStream(stream) ? drainWeb(stream, stop, response) : undefined;
}

interface NodeReadable extends NodeJS.ReadableStream {
  readonly readableEnded?: boolean;
  readonly destroyed?: boolean;
  destroy?(): void;
}

function isNodeReadable(body: object): body is NodeReadable {
  const candidate = body as Partial<NodeReadable>;
  return (
    typeof candidate.pipe === "function" && typeof candidate.resume === "function" && typeof candidate.on === "function"
  );
}

function drainNode(body: NodeReadable, stop: AbortSignal | undefined): Promise<void> | undefined {
  if (body.readableEnded === true || body.destroyed === true) return undefined;
  // the readable side only: that is what is read; an error or a destroy settles it too
  const over = new Promise<void>((resolve) => finished(body, { writable: false }, () => resolve()));
  // without an error: the framework may have no 'error' listener on it yet
  untilStopped(stop, over, () => body.destroy?.());
  body.resume();
  return over;
}

/** Runs `onStop` if `stop` aborts (or has) before `over` settles. */
function untilStopped(stop: AbortSignal | undefined, over: Promise<void>, onStop: () => void): void {
  if (stop === undefined) return;
  if (stop.aborted) {
    onStop();
    return;
  }
  stop.addEventListener("abort", onStop, { once: true });
  void over.then(() => stop.removeEventListener("abort", onStop));
}

function isResponse(body: object): body is Response {
  return typeof (body as Partial<Response>).bodyUsed === "boolean" && "body" in body;
}

/**
 * The body of `response`, or `null` when it has none or it was read already (`@hono/node-server`'s
 * Response throws on `body` once the stream it was built from has been read).
 */
export function responseBody(response: Response): ReadableStream<Uint8Array> | null {
  try {
    return response.bodyUsed ? null : response.body;
  } catch {
    return null;
  }
}

/**
 * A payload the framework still takes and drops itself (Fastify's HEAD route), as it should be
 * handed on: a web stream as a Node stream, which such a framework drains rather than cancels (a
 * cancel would stop reading while its producer goes on unseen); anything else as it is.
 */
export function droppedPayload(payload: unknown): unknown {
  return isWebStream(payload) ? Readable.fromWeb(payload as NodeWebStream) : payload;
}

/**
 * Whether a payload handed to a Node framework is a web body: a `ReadableStream`, or a `Response`
 * with one. Fastify cancels such a body when its client leaves and then ends the response itself,
 * while the body's producer may run on: that end is not the handler's (`ResponseTracker`'s
 * `handlerEndsLater`).
 */
export function isWebBody(payload: unknown): boolean {
  if (payload === null || typeof payload !== "object") return false;
  if (!isResponse(payload)) return isWebStream(payload);
  // one whose body is being read (bodyUsed) is one still: the same answer whenever it is asked
  try {
    return payload.body !== null;
  } catch {
    return true; // `@hono/node-server`'s Response, read already
  }
}

function isWebStream(body: unknown): body is ReadableStream<unknown> {
  return typeof (body as Partial<ReadableStream> | null)?.getReader === "function";
}

function drainWeb(
  body: ReadableStream<unknown>,
  stop: AbortSignal | undefined,
  response: Response | undefined,
): Promise<void> | undefined {
  // someone else reads it: that reader sends or drops it
  if (body.locked) return undefined;
  const reader = body.getReader();
  const over = readToEnd(reader, response);
  untilStopped(stop, over, () => {
    reader.cancel().catch(() => {});
  });
  return over;
}

/** Reads to the end; the whole body of `response` (one chunk or none) is kept for its next use. */
async function readToEnd(reader: ReadableStreamDefaultReader<unknown>, response: Response | undefined): Promise<void> {
  try {
    let chunks = 0;
    let first: unknown;
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      // a second chunk: a streamed body, whose first is not held meanwhile
      first = ++chunks === 1 ? read.value : undefined;
    }
    if (response === undefined || chunks > 1) return;
    if (chunks === 0) rememberWhole(response, new Uint8Array(0));
    else if (first instanceof Uint8Array) rememberWhole(response, first);
  } catch {
    // failed: over all the same
  } finally {
    // a middleware that cancels it once it has read its own copy (Hono's etag() on a 304) may
    reader.releaseLock();
  }
}
