import { type ServerResponse, STATUS_CODES } from "node:http";
import { finished } from "node:stream";
import { type CommitGuard, guardThroughPrototype } from "../speed/shared-commit-guard.js";
import { type HeldRoute, type HttpResponse, REPLACED_ANSWER_HEADERS } from "./http-policy.js";

type Callback = (error?: Error | null) => void;

/**
 * Decides at a Node response's commit point, its first `writeHead`, `write` or `end`, whether the
 * handler's answer may go out: for frameworks where no middleware sees the answer before its status
 * line (Express, a Nest handler writing through `@Res()`). When `held.lostAnswer(status)` says the
 * lock was lost under a success or redirect, its 409 JSON is sent instead and what the handler
 * writes after is discarded: `write` returns false (a pipe stops at once and is unpiped when the
 * response finishes; no `drain` follows) and each callback gets the `LockLostError`. Otherwise
 * nothing more is paid per chunk. Headers already sent (a stream that lost its lock midway) are out
 * of reach: `lock.signal` tells the handler.
 *
 * The 409 keeps the headers set on the response (`setHeader`) but `REPLACED_ANSWER_HEADERS`; those
 * passed to the `writeHead` call it replaces are the handler's own answer's, and go with it, unless
 * `keepsHeadHeaders()` says, at that call, that they are the framework's sending of a whole answer
 * (`@hono/node-server` hands every header of the Response, `cors()`'s included, to `writeHead`):
 * they are then kept as set ones are.
 *
 * The response is guarded through methods shared by every `ServerResponse`
 * (speed/shared-commit-guard.ts), or, when its own methods would not reach those (a wrapper
 * installed earlier, such as compression), through its own methods, put in front of them.
 */
export function guardLostAnswer(res: ServerResponse, held: HeldRoute, keepsHeadHeaders?: () => boolean): void {
  const decision = new CommitDecision(res, held, keepsHeadHeaders);
  if (!guardThroughPrototype(res, decision)) guardOwnMethods(res, decision);
}

/** One guarded response's decision, asked at its commit point and then by every later call. */
class CommitDecision implements CommitGuard {
  readonly #res: ServerResponse;
  readonly #held: HeldRoute;
  readonly #keepsHeadHeaders: (() => boolean) | undefined;
  #decided = false;
  #lost: Error | undefined;

  constructor(res: ServerResponse, held: HeldRoute, keepsHeadHeaders: (() => boolean) | undefined) {
    this.#res = res;
    this.#held = held;
    this.#keepsHeadHeaders = keepsHeadHeaders;
  }

  decide(
    status: number,
    writeHead: ServerResponse["writeHead"],
    end: ServerResponse["end"],
    head?: ArrayLike<unknown>,
  ): boolean {
    if (this.#decided) return this.#lost !== undefined;
    this.#decided = true;
    const res = this.#res;
    const answer = res.headersSent ? undefined : this.#held.lostAnswer(status);
    if (answer !== undefined) {
      const error = this.#held.lostError();
      if (head !== undefined && this.#keepsHeadHeaders?.() === true) setHeadHeaders(res, head);
      // through the methods below the guard: a wrapper re-entering the guard meanwhile passes through
      sendInstead(res, answer, writeHead, end);
      this.#lost = error;
    }
    return this.#lost !== undefined;
  }

  discardWrite(args: ArrayLike<unknown>): boolean {
    const callback = Array.prototype.find.call(args, (arg) => typeof arg === "function") as Callback | undefined;
    if (callback !== undefined) process.nextTick(callback, this.#lost);
    return false;
  }

  discardEnd(res: ServerResponse, args: ArrayLike<unknown>): ServerResponse {
    const callback = Array.prototype.find.call(args, (arg) => typeof arg === "function") as Callback | undefined;
    if (callback !== undefined) finished(res, () => callback());
    return res;
  }
}

/**
 * The guard as methods of `res` itself, in front of those it has now (the prototype's, or a wrapper
 * installed earlier). Once decided, only the guard's own methods are replaced: a wrapper installed
 * after it (compression or a session's end on the route) stays, and reaches the original through
 * the guard as before; for an intact lock the methods it had are put back.
 */
function guardOwnMethods(res: ServerResponse, decision: CommitDecision): void {
  // the methods in place now: the prototype's, or a wrapper installed earlier (compression)
  const { writeHead, write, end } = res;
  const decide = (status: number, head?: ArrayLike<unknown>): boolean => {
    const lost = decision.decide(status, writeHead, end, head);
    if (res.writeHead === guardedWriteHead) res.writeHead = lost ? discardHead : writeHead;
    if (res.write === guardedWrite) res.write = lost ? discardWrite : write;
    if (res.end === guardedEnd) res.end = lost ? discardEnd : end;
    return lost;
  };
  const discardHead = function discardHead(this: ServerResponse) {
    return this;
  } as ServerResponse["writeHead"];
  const discardWrite = function discardWrite(...args: unknown[]): boolean {
    return decision.discardWrite(args);
  } as ServerResponse["write"];
  const discardEnd = function discardEnd(this: ServerResponse, ...args: unknown[]) {
    return decision.discardEnd(this, args);
  } as ServerResponse["end"];
  const guardedWriteHead = function guardedWriteHead(this: ServerResponse, status: number, ...rest: unknown[]) {
    return decide(status, [status, ...rest]) ? this : Reflect.apply(writeHead, this, [status, ...rest]);
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

/**
 * Sets on `res` the headers of a `writeHead(status, [message], [headers])` call, as that call would
 * have: an object, or a list (`[name, value, …]` or `[[name, value], …]`).
 */
function setHeadHeaders(res: ServerResponse, head: ArrayLike<unknown>): void {
  const headers = typeof head[1] === "string" ? head[2] : head[1];
  if (headers === null || typeof headers !== "object") return;
  const pairs: [unknown, unknown][] = [];
  if (!Array.isArray(headers)) pairs.push(...Object.entries(headers));
  else if (Array.isArray(headers[0])) pairs.push(...(headers as [unknown, unknown][]));
  else for (let at = 0; at + 1 < headers.length; at += 2) pairs.push([headers[at], headers[at + 1]]);
  for (const [name, value] of pairs) {
    // one Node would refuse is left out, as the answer it came with is
    if (typeof name !== "string" || value === undefined) continue;
    try {
      res.setHeader(name, value as string | number | readonly string[]);
    } catch {}
  }
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
