import { type ServerResponse, STATUS_CODES } from "node:http";
import { finished } from "node:stream";
import { type HeldRoute, type HttpResponse, REPLACED_ANSWER_HEADERS } from "./http-policy.js";

type Callback = (error?: Error | null) => void;

/**
 * Decides at a Node response's commit point, its first `writeHead`, `write` or `end`, whether the
 * handler's answer may go out: for frameworks where no middleware sees the answer before its status
 * line (Express, a Nest handler writing through `@Res()`). When `held.lostAnswer(status)` says the
 * lock was lost under a success or redirect, its 409 JSON is sent instead and what the handler
 * writes after is discarded: `write` returns false (a pipe stops at once and is unpiped when the
 * response finishes; no `drain` follows) and each callback gets the `LockLostError`. Otherwise the
 * response's own methods are put back: nothing is paid per chunk (but through a wrapper installed
 * after the guard, which is left in place). Headers already sent (a stream that lost its lock
 * midway) are out of reach: `lock.signal` tells the handler.
 */
export function guardLostAnswer(res: ServerResponse, held: HeldRoute): void {
  // the methods in place now: the prototype's, or a wrapper installed earlier (compression)
  const { writeHead, write, end } = res;
  let lost: Error | undefined;
  let decided = false;
  const decide = (status: number): boolean => {
    if (decided) return lost !== undefined;
    decided = true;
    const answer = res.headersSent ? undefined : held.lostAnswer(status);
    if (answer !== undefined) {
      const error = held.lostError();
      // through the methods the guard wrapped: a wrapper re-entering the guard meanwhile passes through
      sendInstead(res, answer, writeHead, end);
      lost = error;
    }
    // Only the guard's own methods are replaced: a wrapper installed after it (compression or a
    // session's end on the route) stays, and reaches the original through the guard as before.
    if (res.writeHead === guardedWriteHead) res.writeHead = lost ? discardHead : writeHead;
    if (res.write === guardedWrite) res.write = lost ? discardWrite : write;
    if (res.end === guardedEnd) res.end = lost ? discardEnd : end;
    return lost !== undefined;
  };
  const discardHead = function discardHead(this: ServerResponse) {
    return this;
  } as ServerResponse["writeHead"];
  const discardWrite = function discardWrite(...args: unknown[]): boolean {
    const callback = args.find((arg) => typeof arg === "function") as Callback | undefined;
    if (callback !== undefined) process.nextTick(callback, lost);
    return false;
  } as ServerResponse["write"];
  const discardEnd = function discardEnd(this: ServerResponse, ...args: unknown[]) {
    const callback = args.find((arg) => typeof arg === "function") as Callback | undefined;
    if (callback !== undefined) finished(this, () => callback());
    return this;
  } as ServerResponse["end"];
  const guardedWriteHead = function guardedWriteHead(this: ServerResponse, status: number, ...rest: unknown[]) {
    return decide(status) ? this : Reflect.apply(writeHead, this, [status, ...rest]);
  } as ServerResponse["writeHead"];
  const guardedWrite = function guardedWrite(this: ServerResponse, ...args: unknown[]) {
    return decide(this.statusCode) ? Reflect.apply(discardWrite, this, args) : Reflect.apply(write, this, args);
  } as ServerResponse["write"];
  const guardedEnd = function guardedEnd(this: ServerResponse, ...args: unknown[]) {
    return decide(this.statusCode) ? Reflect.apply(discardEnd, this, args) : Reflect.apply(end, this, args);
  } as ServerResponse["end"];
  res.writeHead = guardedWriteHead;
  res.write = guardedWrite;
  res.end = guardedEnd;
}

/** The 409 JSON in place of the handler's answer, through the response's methods the guard wrapped. */
function sendInstead(
  res: ServerResponse,
  { status, headers, body }: HttpResponse,
  writeHead: ServerResponse["writeHead"],
  end: ServerResponse["end"],
): void {
  for (const name of REPLACED_ANSWER_HEADERS) res.removeHeader(name);
  const json = JSON.stringify(body);
  Reflect.apply(writeHead, res, [
    status,
    STATUS_CODES[status],
    { ...headers, "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(json) },
  ]);
  Reflect.apply(end, res, [json]);
}
