import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { StreamableFile } from "@nestjs/common";
import type { HeldRoute } from "@redlock-kit/core";

/**
 * What a HEAD request's handler returned, passed on once the streamed body the response drops has
 * ended: a `StreamableFile`'s stream, or a Node or web stream or a `Response` sent as it is. Nest
 * answers a HEAD request without reading such a body and destroys or cancels it (Fastify's HEAD
 * route drains a stream payload and ends the response at once), while the stream's producer goes on
 * as for a GET and may be the critical section's work. Drained here, the lock waits for its end,
 * and so does the response, as a GET's does.
 */
export async function afterDroppedBody(held: HeldRoute, value: unknown): Promise<unknown> {
  const file = value instanceof StreamableFile;
  const drained = held.followDropped(file ? value.getStream() : value);
  if (drained === undefined) return value;
  await drained;
  // Nest refuses to send a body read already: an empty one in its place, as it sends for HEAD anyway
  return file ? value : emptyLike(value);
}

function emptyLike(body: unknown): unknown {
  if (Object.prototype.toString.call(body) === "[object Response]") {
    const { status, statusText, headers } = body as Response;
    return new Response(emptyWebStream(), { status, statusText, headers });
  }
  return isWebStream(body) ? emptyWebStream() : Readable.from([]);
}

const emptyWebStream = () => new ReadableStream({ start: (controller) => controller.close() });

/** What `followHeadReply` wraps of Fastify's reply. */
interface SendingReply {
  send(payload: unknown): unknown;
}

/**
 * Fastify's reply to a HEAD request, whose payloads are followed as `@redlock-kit/fastify` follows
 * them: the one a handler sends itself through `@Res()` reaches Fastify's HEAD route past the
 * interceptor, which resumes a Node stream only once the response has ended and cancels a web one,
 * whose producer may go on unseen (handed on as a Node stream, drained the same way).
 */
export function followHeadReply(held: HeldRoute, reply: SendingReply): void {
  const send = reply.send;
  reply.send = function followedSend(this: SendingReply, payload: unknown) {
    return send.call(this, held.followHandedOn(payload));
  };
}

function isWebStream(body: unknown): body is WebReadableStream {
  return typeof (body as Partial<WebReadableStream> | null)?.getReader === "function";
}
