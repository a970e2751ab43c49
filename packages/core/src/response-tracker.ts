import type { ServerResponse } from "node:http";

/** Follows one HTTP response for the lock that guards it. */
export interface ResponseTracker {
  /** Aborts when the client goes away before the response is complete (created on first read). */
  readonly signal: AbortSignal;
  /** True once the client went away before the response was complete. */
  readonly clientLeft: boolean;
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
 *
 * Two listeners on the response, and an AbortController only for routes that wait: this runs on
 * every locked request, and `stream.finished()` with a controller each time cost several percent
 * of an Express server's CPU (bench/).
 */
const clientClosed = () => new Error("Client closed the connection");

export function trackResponse(res: ServerResponse): ResponseTracker {
  let controller: AbortController | undefined;
  let clientLeft = false;
  let done = false;
  let callback: (() => void) | undefined;
  const finish = () => {
    if (done) return;
    done = true;
    const run = callback;
    callback = undefined;
    run?.();
  };
  const onFinish = () => {
    res.off("close", onClose);
    finish();
  };
  // A ServerResponse emits 'close' after 'finish', or alone when the connection closed first.
  const onClose = () => {
    res.off("finish", onFinish);
    if (res.writableFinished) return finish();
    clientLeft = true;
    controller?.abort(clientClosed());
    // ended but not yet flushed when the client left: the handler is done
    if (res.writableEnded) return finish();
    const end = res.end;
    res.end = function endAfterClientLeft(this: ServerResponse, ...args: Parameters<ServerResponse["end"]>) {
      res.end = end;
      const result = end.apply(this, args);
      finish();
      return result;
    } as ServerResponse["end"];
  };
  res.on("finish", onFinish);
  res.on("close", onClose);
  return {
    get signal() {
      if (controller === undefined) {
        controller = new AbortController();
        if (clientLeft) controller.abort(clientClosed());
      }
      return controller.signal;
    },
    get clientLeft() {
      return clientLeft;
    },
    whenDone(next) {
      if (done) next();
      else callback = next;
    },
    dispose() {
      res.off("finish", onFinish);
      res.off("close", onClose);
      callback = undefined;
    },
  };
}
