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
 * response's own methods are put back: nothing is paid per chunk. Headers already sent (a stream
 * that lost its lock midway) are out of reach: `lock.signal` tells the handler.
 */
export function guardLostAnswer(res: ServerResponse, held: HeldRoute): void {
  // the methods in place now: the prototype's, or a wrapper installed earlier (compression)
  const { writeHead, write, end } = res;
  let lost: Error | undefined;
  let decided = false;
  const decide = (status: number): boolean => {
    if (decided) return lost !== undefined;
    decided = true;
    res.writeHead = writeHead;
    res.write = write;
    res.end = end;
    const answer = res.headersSent ? undefined : held.lostAnswer(status);
    if (answer === undefined) return false;
    lost = held.lostError();
    sendInstead(res, answer);
    res.writeHead = discardHead;
    res.write = discardWrite;
    res.end = discardEnd;
    return true;
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
  res.writeHead = function guardedWriteHead(this: ServerResponse, status: number, ...rest: unknown[]) {
    return decide(status) ? this : Reflect.apply(writeHead, this, [status, ...rest]);
  } as ServerResponse["writeHead"];
  res.write = function guardedWrite(this: ServerResponse, ...args: unknown[]) {
    return decide(this.statusCode) ? Reflect.apply(discardWrite, this, args) : Reflect.apply(write, this, args);
  } as ServerResponse["write"];
  res.end = function guardedEnd(this: ServerResponse, ...args: unknown[]) {
    return decide(this.statusCode) ? Reflect.apply(discardEnd, this, args) : Reflect.apply(end, this, args);
  } as ServerResponse["end"];
}

/** The 409 JSON in place of the handler's answer, through the response's own methods (put back before). */
function sendInstead(res: ServerResponse, { status, headers, body }: HttpResponse): void {
  for (const name of REPLACED_ANSWER_HEADERS) res.removeHeader(name);
  const json = JSON.stringify(body);
  res.writeHead(status, STATUS_CODES[status], {
    ...headers,
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(json),
  });
  res.end(json);
}
