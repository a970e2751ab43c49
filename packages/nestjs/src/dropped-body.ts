import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { StreamableFile } from "@nestjs/common";
import { type HeldRoute, isWebBody, sendsNoBody } from "@redlock-kit/core";

/**
 * What a handler returned for a response that drops its body (a HEAD request's, an `@HttpCode(204)`
 * route's), passed on once that streamed body has ended: a `StreamableFile`'s stream, or a Node or
 * web stream or a `Response` sent as it is. Nest answers without reading such a body and destroys
 * or cancels it (Fastify's HEAD route drains a stream payload and ends the response at once; its
 * 204 ends it at once), while the stream's producer goes on as for a 200 and may be the critical
 * section's work. Drained here, the lock waits for its end, and so does the response, as a 200's does.
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

/** What `followReplyPayloads` wraps of Fastify's reply. */
interface SendingReply {
  readonly statusCode: number;
  send(payload: unknown): unknown;
}

/**
 * Fastify's reply, whose payloads are followed as `@redlock-kit/fastify` follows them (the one a
 * handler sends itself through `@Res()` reaches Fastify past the interceptor). A payload the
 * response drops (a HEAD request's, a 204's), which Fastify would answer at once, is handed on
 * once its streamed body has ended (`HeldRoute.followHandedOn`), as a returned one is: a client
 * that leaves meanwhile is seen. A web body sent: `onWebBody()` is told, as Fastify cancels it when
 * its client leaves and then ends the response itself.
 */
export function followReplyPayloads(held: HeldRoute, reply: SendingReply, method: string, onWebBody: () => void): void {
  const send = reply.send;
  let handingOn = false;
  reply.send = function followedSend(this: SendingReply, payload: unknown) {
    // the send() Fastify adds once the handler's promise has settled unsent: this one is on its way
    if (handingOn) return this;
    if (sendsNoBody(method, this.statusCode)) {
      handingOn = true;
      held
        .followHandedOn(payload)
        .then((body) => send.call(this, body))
        // as Fastify answers a throwing handler
        .catch((error: unknown) => send.call(this, error));
      return this;
    }
    if (isWebBody(payload)) onWebBody();
    return send.call(this, payload);
  };
}

function isWebStream(body: unknown): body is WebReadableStream {
  return typeof (body as Partial<WebReadableStream> | null)?.getReader === "function";
}
