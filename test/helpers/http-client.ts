/**
 * A small HTTP client for the contract suite: node:http with a fresh connection per request
 * (agent: false), so that a finished test leaves no pooled socket behind and an abort is a real
 * disconnect.
 */
import http from "node:http";
import { text } from "node:stream/consumers";

export interface RequestInit {
  method?: "GET" | "POST" | "HEAD";
  headers?: Record<string, string>;
  /** Sent as JSON. */
  body?: unknown;
  /** The path sent as written, instead of the url's: a url has its dot segments resolved first. */
  path?: string;
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** Starts a request; `response` resolves when the headers arrive. `request.destroy()` disconnects. */
export function open(url: string, init: RequestInit = {}) {
  const payload = init.body === undefined ? undefined : JSON.stringify(init.body);
  const headers: Record<string, string> = payload === undefined ? {} : { "content-type": "application/json" };
  const request = http.request(url, {
    method: init.method ?? "GET",
    agent: false,
    headers: { ...headers, ...init.headers },
    ...(init.path === undefined ? {} : { path: init.path }),
  });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    request.once("response", resolve);
    request.once("error", reject);
  });
  // a test that disconnects on purpose never awaits the response
  response.catch(() => {});
  request.end(payload);
  return { request, response };
}

export async function send(url: string, init?: RequestInit): Promise<Answer> {
  const response = await open(url, init).response;
  return { status: response.statusCode ?? 0, headers: response.headers, text: await text(response) };
}

/** The next chunk of a streamed body. */
export function nextChunk(response: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    response.once("data", (chunk: Buffer) => {
      response.pause();
      response.off("error", reject);
      resolve(chunk.toString());
    });
    response.once("error", reject);
    response.resume();
  });
}
