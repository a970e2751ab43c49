/**
 * A `Response` made once and returned on every request (`const ok = new Response("ok")` at module
 * level): its body can be read once, while `@hono/node-server` serves its own Response again and
 * again from the string it was built with, as long as nobody read it. A body the adapter reads to
 * follow it is remembered here when it was whole (one chunk, or none); the next time the same
 * Response is answered with, a fresh one with those bytes is sent in its place.
 *
 * A streamed body (two chunks or more) is not kept. A fresh Response per request pays one WeakMap
 * entry, gone with it.
 */
const wholeBodies = new WeakMap<Response, Uint8Array>();

/** Keeps `bytes`, the whole body of `response` just read to its end. */
export function rememberWhole(response: Response, bytes: Uint8Array): void {
  wholeBodies.set(response, bytes);
}

/**
 * A fresh Response with the status, headers and bytes of `response`, whose whole body was read
 * already (the same Response answered with again), or `undefined` for any other.
 */
export function servedAgain(response: Response): Response | undefined {
  const bytes = wholeBodies.get(response);
  if (bytes === undefined) return undefined;
  // the Response copies the bytes: what a reader of this one does to them stays with it
  return new Response(bytes, { status: response.status, statusText: response.statusText, headers: response.headers });
}
