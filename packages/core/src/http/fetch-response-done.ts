import { responseBody } from "./dropped-body.js";
import type { TrackedResponse } from "./response-done.js";
import { rememberWhole, servedAgain } from "./whole-body.js";

/**
 * Follows one Fetch-API response (Hono off `@hono/node-server`, and any server that answers with a
 * `Response`) for the lock that guards it. "Done" means the body the server sends has been read to
 * its end or has failed; a response without a body is done as soon as the handler returns it.
 *
 * The request's `signal` tells when the client went away: a wait for the lock stops, and once the
 * lock is held its auto-extension stops (`whenClientLeaves`), so that a body nobody reads any more
 * cannot pin the lock until the cap. A body the server cancels (its client left) counts the same:
 * it does not end the response, since its producer may still run (Hono's `stream()` settles the
 * cancel at once while its callback goes on), so the lock expires within one ttl.
 *
 * `answered` tells when another step answered the request while the route waited for its lock (an
 * outer timeout's 504): the lock is then given back at once and the handler does not run.
 *
 * @example
 * const tracker = new FetchResponseTracker(request.signal);
 * const outcome = await route.beginTracked(source, tracker);
 * // ... run the handler, then send what this returns:
 * return tracker.respond(response);
 */
/**
 * Set while a tracker cancels a body it discards: that cancel is not the client's. Shared: the body
 * may be another tracker's, or wrap one (a guard around the route follows the route's answer), and
 * each cancel runs its source's at once, the whole chain within this one.
 */
let discarding = false;

export class FetchResponseTracker implements TrackedResponse {
  readonly #request: AbortSignal | undefined;
  readonly #answered: (() => boolean) | undefined;
  #fallback: AbortController | undefined;
  #clientLeft: boolean;
  #done = false;
  /** The body of the response `respond()` returned last, which the server may still be given. */
  #sent: ReadableStream<Uint8Array> | undefined;
  #onDone: (() => void) | undefined;
  #onLeft: (() => void) | undefined;

  /**
   * @param requestSignal the request's `signal`, aborted when the client disconnects (when the server says so)
   * @param answered whether another step has answered the request (the framework's own state), asked
   * when the wait for the lock ends
   */
  constructor(requestSignal?: AbortSignal, answered?: () => boolean) {
    this.#request = requestSignal;
    this.#answered = answered;
    this.#clientLeft = requestSignal?.aborted === true;
    if (!this.#clientLeft) requestSignal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  get signal(): AbortSignal {
    if (this.#request) return this.#request;
    // a server that gives no request signal: nothing ever aborts the wait but its own deadline
    this.#fallback ??= new AbortController();
    return this.#fallback.signal;
  }

  get clientLeft(): boolean {
    return this.#clientLeft;
  }

  /** True once the response is over, or another step answered the request (`answered`). */
  get finished(): boolean {
    return this.#done || this.#answered?.() === true;
  }

  whenDone(callback: () => void): void {
    if (this.#done) callback();
    else this.#onDone = callback;
  }

  whenClientLeaves(callback: () => void): void {
    if (this.#done) return;
    if (this.#clientLeft) callback();
    else this.#onLeft = callback;
  }

  dispose(): void {
    this.#request?.removeEventListener("abort", this.#onAbort);
    this.#onDone = undefined;
    this.#onLeft = undefined;
  }

  /**
   * The response to send instead of `response`: the same status, headers and bytes, with a body
   * that ends the response when it has been read to its end or has failed; a cancel by the server
   * only tells that the client left.
   * `sendsBody: false` (e.g. a HEAD request, whose body the framework drops unread) and a
   * response without a body end it now; a dropped streamed body is followed apart, by
   * `HeldRoute.followDropped`.
   */
  respond(response: Response, sendsBody = true): Response {
    // before the body: @hono/node-server's Response gives a body without a Content-Type its default
    // one (text/plain) only while its headers are read first, and an outer compress() skips a body
    // without one
    const headers = response.headers;
    const body = responseBody(response);
    if (!sendsBody || body === null || body.locked) {
      // the same Response answered with again, whose whole body a request before this one read
      const again = sendsBody ? servedAgain(response) : undefined;
      if (again !== undefined) return this.respond(again);
      // a body that something else reads or has read cannot be followed: that reader sends it
      this.end();
      return response;
    }
    if (this.#clientLeft) return this.#unread(response, body);
    const followed = endsWith(
      body,
      (whole) => {
        if (whole !== undefined) rememberWhole(response, whole);
        this.end();
      },
      () => {
        // our own cancel (discard) is not the client's
        if (discarding) return false;
        this.#onAbort();
        return true;
      },
    );
    this.#sent = followed;
    return new Response(followed, { status: response.status, statusText: response.statusText, headers });
  }

  /**
   * Cancels the body of a response `respond()` returned that will not be sent (replaced by another,
   * which is followed in its turn): its producer is told, and the cancel, ours, does not count as
   * the client leaving.
   */
  discard(response: Response): void {
    const body = responseBody(response);
    if (body !== null) this.#cancel(body);
  }

  /**
   * `respond()` for each response that becomes the answer until the response is over, not only the
   * first: a step around the route may put another in its place once the route has returned (an
   * error page for a 404, Hono's `trimTrailingSlash()` redirect), and the server sends the last.
   * One on the body followed so far (the same stream under other headers) goes on being followed
   * through it. One that is not leaves that body unsent: unread by anyone, it is discarded (its
   * producer told, and no client counted as gone) and the new one followed instead. Left alone,
   * it would never end, and the lock would be extended until `maxHoldMs`. A body someone reads
   * (piped into the new one, or sent: an outer `timeout()`'s answer) ends or is cancelled by that
   * reader; the new one is followed as well, the first end of either ending the response.
   */
  follow(response: Response): Response {
    if (this.#done) return response;
    const previous = this.#sent;
    if (previous !== undefined) {
      if (responseBody(response) === previous) return response;
      if (!previous.locked) this.#cancel(previous);
    }
    return this.respond(response);
  }

  /** Cancels `body`, which tells its producer; that cancel is ours, not the client's. */
  #cancel(body: ReadableStream<Uint8Array>): void {
    discarding = true;
    try {
      // a stream's cancel runs its source's cancel at once: the flag is read there
      body.cancel().catch(() => {});
    } finally {
      discarding = false;
    }
  }

  /**
   * A response the handler gave once its client had left: nobody reads it, and a server may cancel
   * it unread (`@hono/node-server` does), which says nothing of the handler. A plain body (text,
   * JSON, bytes) is whole at once: the handler is done, and the response ends now (the lock is
   * released). A body still being produced (a `stream()` callback) is cancelled, and the lock, no
   * longer extended, lapses within one ttl, as for a reader that leaves mid-stream.
   */
  #unread(response: Response, body: ReadableStream<Uint8Array>): Response {
    this.#sent = undefined;
    endsAtOnce(body.getReader()).then((whole) => {
      if (whole) this.end();
    });
    return new Response(null, { status: response.status, statusText: response.statusText, headers: response.headers });
  }

  /** Ends the response now: the handler failed, or the body was sent another way. */
  end(): void {
    if (this.#done) return;
    this.#done = true;
    const callback = this.#onDone;
    this.dispose();
    callback?.();
  }

  readonly #onAbort = (): void => {
    if (this.#done) return;
    this.#clientLeft = true;
    const callback = this.#onLeft;
    this.#onLeft = undefined;
    callback?.();
  };
}

/**
 * `body`, pulled chunk by chunk (no read-ahead), calling `onEnd` once it ended (with its bytes when
 * they came in one chunk or none: `rememberWhole`) or failed, and
 * `onCancel` if the server cancels it. A cancel `onCancel` says is the server's (true: its client
 * left) still ends it when the rest of `body` is whole at once (a plain body, whose producer is
 * done: the server cancels what it no longer sends); a body still being produced is cancelled.
 */
const EMPTY = new Uint8Array(0);

function endsWith(
  body: ReadableStream<Uint8Array>,
  onEnd: (whole?: Uint8Array) => void,
  onCancel: () => boolean,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let cancelled = false;
  // the body's only chunk so far (none yet: empty); `null` from its second on
  let whole: Uint8Array | null = EMPTY;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          // a read pending at the cancel ends as done: that is the cancel, not the body's end
          if (cancelled) return;
          if (!done) {
            whole = whole === EMPTY ? value : null;
            return controller.enqueue(value);
          }
          controller.close();
          return onEnd(whole ?? undefined);
        } catch (error) {
          if (cancelled) return;
          controller.error(error);
        }
        onEnd();
      },
      cancel(reason) {
        cancelled = true;
        if (!onCancel()) return reader.cancel(reason);
        // settles once the handler's body is over or cancelled in its turn
        return endsAtOnce(reader, reason).then((whole) => {
          if (whole) onEnd();
        });
      },
    },
    { highWaterMark: 0 },
  );
}

/**
 * Whether what `reader` has left ends within one event-loop turn, read with the data discarded: a
 * body built from a string or bytes does (a failed one is over too). One that is still being
 * produced is cancelled then (with `reason`), so that its producer learns that nobody reads it.
 */
async function endsAtOnce(reader: ReadableStreamDefaultReader<Uint8Array>, reason?: unknown): Promise<boolean> {
  let over = false;
  const turnOver = new Promise<undefined>((resolve) =>
    setTimeout(() => {
      over = true;
      resolve(undefined);
    }, 0),
  );
  try {
    for (let reads = 1; !over; reads++) {
      const read = await Promise.race([reader.read(), turnOver]);
      if (read === undefined) break;
      if (read.done) return true;
      // a producer that enqueues at every pull answers each read at once: let the timer run
      if (reads % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
  } catch {
    return true;
  }
  await reader.cancel(reason).catch(() => {});
  return false;
}
