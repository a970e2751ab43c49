import { errorResponse, REPLACED_ANSWER_HEADERS, RedlockError } from "@redlock-kit/core";
import type { ErrorRequestHandler } from "express";

/**
 * Error middleware that answers a `RedlockError` thrown by a handler or a service (e.g. an `@Locked`
 * method) with its status, headers and JSON body: 423 with `Retry-After`, 503, 409 or 400. Anything
 * else, or an error after the headers went out, goes on to the next error handler.
 *
 * @example
 * app.use(redlockErrorHandler()); // after the routes
 */
export function redlockErrorHandler(): ErrorRequestHandler {
  return function handleRedlockError(error, _req, res, next) {
    if (!RedlockError.isRedlockError(error) || res.headersSent) return next(error);
    // The handler may have set up the answer it meant to send (res.attachment(), a Content-Encoding):
    // res.json() keeps a Content-Type set before, and the JSON would go out as that file
    for (const name of REPLACED_ANSWER_HEADERS) res.removeHeader(name);
    const { status, headers, body } = errorResponse(error);
    res.status(status).set(headers).json(body);
  };
}
