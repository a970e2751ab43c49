import { errorResponse, RedlockError } from "@redlock-kit/core";
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
    const { status, headers, body } = errorResponse(error);
    res.status(status).set(headers).json(body);
  };
}
