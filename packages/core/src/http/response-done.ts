import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";

const clientClosed = () => new Error("Client closed the connection");

/**
 * What a route lock follows of one response, whatever the server: a Node `ServerResponse`
 * (`ResponseTracker`) or a Fetch-API `Response` (`FetchResponseTracker`).
 */
export interface TrackedResponse {
  /** Aborts when the client goes away before the response is complete; stops a wait for the lock. */
  readonly signal: AbortSignal;
  /** True once the client went away before the response was complete. */
  readonly clientLeft: boolean;
  /**
   * True once the response is answered: complete, or ended and not all sent yet (a tracker that
   * cannot tell leaves it undefined).
   */
  readonly finished?: boolean;
  /** Runs `callback` once, when the handler has finished its response (now, if it already has). */
  whenDone(callback: () => void): void;
  /**
   * Runs `callback` once if the client leaves before the response is done: the route then stops
   * extending the lock, so that it expires within one ttl unless the response ends first.
   */
  whenClientLeaves(callback: () => void): void;
  /** Stops following the response (the lock was not acquired). */
  dispose(): void;
}

/**
 * Follows one HTTP response for the lock that guards it; attach before the first `await` of a
 * request. "Done" means the handler ended the response: 'finish' (a streamed body included), or
 * `res.end()` called after the client already left. A client that disconnects early does not end
 * the critical section: the handler may still be running. The signal aborts (to stop a wait for
 * the lock) and `whenClientLeaves` callbacks run (to stop extending a held one).
 *
 * Two listeners on the response, and an AbortController only for routes that wait: this runs on
 * every locked request, and `stream.finished()` with a controller each time cost several percent
 * of an Express server's CPU (bench/).
 */
export class ResponseTracker implements TrackedResponse {
  readonly #res: ServerResponse;
  #controller: AbortController | undefined;
  #clientLeft = false;
  #done = false;
  #callback: (() => void) | undefined;
  #onLeave: (() => void) | undefined;
  readonly #handlerEndsLater: (() => boolean) | undefined;
  /** The connection of a response queued behind another, followed until it has its socket's events. */
  #connection: Socket | undefined;

  /**
   * @param handlerEndsLater whether an `end()` that comes after the client left still means the
   * handler finished (the default): asked when the client leaves before the response is complete,
   * and again at that `end()`; both must say yes. A server that ends the response itself once it has
   * cancelled a streamed body (`@hono/node-server`; Fastify for a web body, which may also be handed
   * to it after the client left) says no while that body's producer may still run: the lock then
   * expires within one ttl.
   */
  constructor(res: ServerResponse, handlerEndsLater?: () => boolean) {
    this.#res = res;
    this.#handlerEndsLater = handlerEndsLater;
    // An earlier step of the request may have awaited: the response can be over already, and
    // its 'finish' or 'close' will not come again. Or answered (ended) and not sent yet: behind a
    // slow reader, or queued behind an earlier response on its connection.
    if (res.writableEnded) {
      this.#done = true;
      return;
    }
    if (res.closed || res.destroyed || closedUnended(res)) {
      this.#clientLeft = true;
      return;
    }
    res.on("finish", this.#onFinish);
    res.on("close", this.#onClose);
    // Queued behind an earlier response on its connection (pipelined requests): Node assigns the
    // socket once that one has finished, and a connection that closes before then gives this
    // response neither 'finish' nor 'close'. The connection's own 'close' tells it then.
    if (res.socket === null && res.req?.socket) this.#followConnection(res.req.socket);
  }

  #followConnection(connection: Socket): void {
    if (connection.destroyed) {
      this.#onClose();
      return;
    }
    this.#connection = connection;
    onConnectionClose(connection, this.#onClose);
  }

  #unfollowConnection(): void {
    if (this.#connection === undefined) return;
    offConnectionClose(this.#connection, this.#onClose);
    this.#connection = undefined;
  }

  /** Aborts when the client goes away before the response is complete (created on first read). */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#clientLeft) this.#controller.abort(clientClosed());
    }
    return this.#controller.signal;
  }

  /** True once the client went away before the response was complete. */
  get clientLeft(): boolean {
    return this.#clientLeft;
  }

  /**
   * True once the response is answered: complete, or ended by another step while the route waited
   * and not all sent yet ('finish' only comes once it is).
   */
  get finished(): boolean {
    return this.#done || this.#res.writableEnded;
  }

  /** Runs `callback` once, when the handler has finished its response (now, if it already has). */
  whenDone(callback: () => void): void {
    if (this.#done) callback();
    else this.#callback = callback;
  }

  /** Runs `callback` once if the client goes away before the handler has finished its response. */
  whenClientLeaves(callback: () => void): void {
    if (this.#clientLeft && !this.#done) callback();
    else this.#onLeave = callback;
  }

  /** Stops following the response (the lock was not acquired). */
  dispose(): void {
    this.#res.off("finish", this.#onFinish);
    this.#res.off("close", this.#onClose);
    this.#unfollowConnection();
    this.#callback = undefined;
    this.#onLeave = undefined;
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    const callback = this.#callback;
    this.#callback = undefined;
    this.#onLeave = undefined;
    callback?.();
  }

  readonly #onFinish = (): void => {
    // Node's HTTP/2 response emits 'finish' when its stream closes, also unended: its client left
    if (!this.#res.writableEnded) {
      this.#onClose();
      return;
    }
    this.#res.off("close", this.#onClose);
    this.#unfollowConnection();
    this.#finish();
  };

  // A ServerResponse emits 'close' after 'finish', or alone when the connection closed first; a
  // queued one's connection may close first, and then the response too once it had its socket.
  readonly #onClose = (): void => {
    if (this.#clientLeft || this.#done) return;
    const res = this.#res;
    res.off("finish", this.#onFinish);
    this.#unfollowConnection();
    if (res.writableFinished && res.writableEnded) {
      this.#finish();
      return;
    }
    this.#clientLeft = true;
    this.#controller?.abort(clientClosed());
    // ended but not yet flushed when the client left: the handler is done
    if (res.writableEnded) {
      this.#finish();
      return;
    }
    const onLeave = this.#onLeave;
    this.#onLeave = undefined;
    onLeave?.();
    if (this.#handlerEndsLater?.() === false) return;
    const end = res.end;
    const tracker = this;
    res.end = function endAfterClientLeft(this: ServerResponse, ...args: Parameters<ServerResponse["end"]>) {
      res.end = end;
      const result = end.apply(this, args);
      if (tracker.#handlerEndsLater?.() !== false) tracker.#finish();
      return result;
    } as ServerResponse["end"];
  };
}

/**
 * An HTTP/2 response whose stream closed unended (its client cancelled it): it has neither `closed`
 * nor `destroyed`, but is finished, and so is its stream. A HEAD request's is finished from the
 * start (it has nothing to write) while its stream is open: not closed.
 */
function closedUnended(res: ServerResponse): boolean {
  if (!res.writableFinished) return false;
  const stream = (res as { stream?: { readonly closed: boolean; readonly destroyed: boolean } }).stream;
  return stream === undefined || stream.closed || stream.destroyed;
}

/**
 * Whether a Node response needs no answer from the route any more: its headers are out (a streamed
 * answer has started), it has ended, or its client is gone. What a hook left unanswered is not.
 */
export function responseAnswered(res: ServerResponse): boolean {
  return res.headersSent || res.writableEnded || res.destroyed;
}

/**
 * The responses queued on each connection that follow its 'close': one listener per connection,
 * however many requests a client pipelines on it.
 */
const queuedOn = new WeakMap<Socket, Set<() => void>>();

function onConnectionClose(connection: Socket, callback: () => void): void {
  let callbacks = queuedOn.get(connection);
  if (callbacks === undefined) {
    const waiting = new Set<() => void>();
    callbacks = waiting;
    queuedOn.set(connection, waiting);
    connection.once("close", () => {
      queuedOn.delete(connection);
      for (const queued of waiting) queued();
    });
  }
  callbacks.add(callback);
}

function offConnectionClose(connection: Socket, callback: () => void): void {
  queuedOn.get(connection)?.delete(callback);
}
