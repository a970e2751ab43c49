import type { ServerResponse } from "node:http";
import { finished } from "node:stream";

/** Follows one HTTP response for the lock that guards it. */
export interface ResponseTracker {
  /** Aborts when the client goes away before the response is complete. */
  readonly signal: AbortSignal;
  /** Runs `callback` once, when the handler has finished its response (now, if it already has). */
  whenDone(callback: () => void): void;
  /** Stops following the response (the lock was not acquired). */
  dispose(): void;
}

/**
 * Attach before the first `await` of a request. "Done" means the handler ended the response:
 * 'finish' (a streamed body included), or `res.end()` called after the client already left. A
 * client that disconnects early does not end the critical section: the handler may still be
 * running, so only the signal aborts (to stop a wait for the lock).
 */
export function trackResponse(res: ServerResponse): ResponseTracker {
  const controller = new AbortController();
  let done = false;
  let callback: (() => void) | undefined;
  const finish = () => {
    if (done) return;
    done = true;
    const run = callback;
    callback = undefined;
    run?.();
  };
  const stop = finished(res, (error) => {
    stop();
    if (!error) return finish();
    // premature close: the client left; the handler may still be writing
    controller.abort(new Error("Client closed the connection"));
    if (res.writableEnded) return finish();
    const end = res.end;
    res.end = function endAfterClientLeft(this: ServerResponse, ...args: Parameters<ServerResponse["end"]>) {
      res.end = end;
      const result = end.apply(this, args);
      finish();
      return result;
    } as ServerResponse["end"];
  });
  return {
    signal: controller.signal,
    whenDone(next) {
      if (done) next();
      else callback = next;
    },
    dispose() {
      stop();
      callback = undefined;
    },
  };
}
