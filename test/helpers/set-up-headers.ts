/**
 * Headers an app sets up before a locked route answers: some describe the answer it expects (a CSV
 * download, gzip, a public cache entry with its validators and length), others do not (a request id,
 * a cookie, CORS). The library's own answers must drop the first and keep the others.
 */
import type { Answer } from "./http-client.js";

export const SET_UP = {
  "Content-Type": "text/csv",
  "Content-Disposition": 'attachment; filename="report.csv"',
  "Content-Encoding": "gzip",
  "Content-Language": "fr",
  "Content-Length": "2",
  "Cache-Control": "public, max-age=600",
  ETag: '"v1"',
  "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
  Expires: "Thu, 01 Jan 2099 00:00:00 GMT",
  "X-Request-Id": "req-7",
  "Set-Cookie": "session=abc; HttpOnly",
  "Access-Control-Allow-Origin": "https://app.example",
} as const;

const DESCRIBING = [
  "Content-Type",
  "Content-Disposition",
  "Content-Encoding",
  "Content-Language",
  "Content-Length",
  "Cache-Control",
  "ETag",
  "Last-Modified",
  "Expires",
] as const;

/** A header's value without its parameters: Express adds `; charset=utf-8` to a text type it is given. */
const bare = (value: unknown) => String(value).split(";")[0];

/**
 * What `answer` carries of SET_UP: `leftOver`, the describing headers still as set up (a framework's
 * own ETag or length for the JSON it sent is not one); `kept`, the others.
 */
export function setUpHeaders({ headers }: Answer) {
  return {
    type: headers["content-type"],
    cacheControl: headers["cache-control"],
    leftOver: DESCRIBING.filter((name) => bare(headers[name.toLowerCase()]) === bare(SET_UP[name])),
    kept: [headers["x-request-id"], headers["set-cookie"], headers["access-control-allow-origin"]],
  };
}

/** `setUpHeaders` of one of the library's own JSON answers. */
export const OWN_ANSWER = {
  type: "application/json; charset=utf-8",
  cacheControl: "no-store",
  leftOver: [],
  kept: ["req-7", ["session=abc; HttpOnly"], "https://app.example"],
};
