import { REPLACED_ANSWER_HEADERS } from "@redlock-kit/core";

/** Express's response (`res.header`, an alias of `res.set`) and Fastify's reply both set and remove a header so. */
interface PlatformResponse {
  header?(name: string, value: string): unknown;
  removeHeader?(name: string): unknown;
}

/**
 * Sets an error answer's headers (`Cache-Control: no-store`, a 423's `Retry-After`) over those set
 * before (`@Header()`, a middleware), and removes those that described the answer the route set
 * up (core's `REPLACED_ANSWER_HEADERS`: a `@Header("Content-Type", "text/csv")`, a
 * `Content-Disposition`, a `Content-Encoding`, an `ETag`…), which Nest's exception filter would
 * send with its JSON. On the platform's own object, whose headers Fastify writes over the raw ones.
 */
export function setErrorHeaders(response: unknown, headers: Readonly<Record<string, string>>): void {
  const platform = response as PlatformResponse;
  if (typeof platform.header !== "function") return;
  for (const name of REPLACED_ANSWER_HEADERS) platform.removeHeader?.(name);
  for (const [name, value] of Object.entries(headers)) platform.header(name, value);
}
