import { STATUS_CODES } from "node:http";
import {
  BadRequestException,
  ConflictException,
  HttpException,
  type HttpExceptionOptions,
  HttpStatus,
  ServiceUnavailableException,
} from "@nestjs/common";
import { ERROR_ANSWER_HEADERS, type RedlockError } from "@redlock-kit/core";

export interface LockedExceptionOptions extends HttpExceptionOptions {
  /**
   * Seconds after which the client may try again, sent as `Retry-After`.
   * @default 1
   */
  retryAfter?: number;
}

/**
 * 423 Locked: another owner holds the lock. Thrown for contention on a `@LockedRoute` and for a
 * `LockContentionError` from a `@Locked` method called by a route; catch it in an exception filter
 * to answer otherwise. The module's interceptor sends `Retry-After` with it (`retryAfter` seconds:
 * the holder's remaining ttl, rounded up, at least 1) and `Cache-Control: no-store`, also when your
 * own code throws one.
 * Body: `{"statusCode":423,"message":"Resource is locked","error":"Locked","errorCode":...}`.
 *
 * @example
 * throw new LockedException("Order is being paid", { retryAfter: 5 });
 */
export class LockedException extends HttpException {
  /** Seconds after which the client may try again (the `Retry-After` header). */
  readonly retryAfter: number;

  constructor(message = "Resource is locked", options: LockedExceptionOptions = {}) {
    const { retryAfter = 1, ...httpOptions } = options;
    if (!Number.isInteger(retryAfter) || retryAfter < 0) {
      throw new RangeError(`retryAfter must be a whole number of seconds, got ${retryAfter}`);
    }
    const body = HttpException.createBody(message, "Locked", HttpStatus.LOCKED, httpOptions.errorCode);
    super(body, HttpStatus.LOCKED, httpOptions);
    this.retryAfter = retryAfter;
  }

  /** The response headers that go with this exception: `Cache-Control: no-store` and `Retry-After`. */
  get headers(): Readonly<Record<string, string>> {
    return { ...ERROR_ANSWER_HEADERS, "Retry-After": String(this.retryAfter) };
  }
}

/**
 * The Nest exception for a redlock-kit error, with the status, message and `Retry-After` core
 * decided: 423 `LockedException`, 503 `ServiceUnavailableException`, 409 `ConflictException`,
 * 400 `BadRequestException`. The error stays the exception's `cause`; its `code` is the body's
 * `errorCode`.
 */
export function httpExceptionFor(error: RedlockError): HttpException {
  const options = { cause: error, errorCode: error.code };
  const message = error.body.error;
  switch (error.status) {
    case HttpStatus.LOCKED:
      return new LockedException(message, { ...options, retryAfter: Number(error.headers["Retry-After"] ?? 1) });
    case HttpStatus.SERVICE_UNAVAILABLE:
      return new ServiceUnavailableException(message, options);
    case HttpStatus.CONFLICT:
      return new ConflictException(message, options);
    case HttpStatus.BAD_REQUEST:
      return new BadRequestException(message, options);
    default:
      return new HttpException(
        HttpException.createBody(message, STATUS_CODES[error.status] ?? "Error", error.status, error.code),
        error.status,
        options,
      );
  }
}
