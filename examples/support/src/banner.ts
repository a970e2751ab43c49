import type { ExampleBackend } from "./backend.js";

/** A curl line to print, with what it shows. */
export interface CurlLine {
  readonly say: string;
  readonly run: string;
}

/**
 * `curl` printing the body and the status code: `{"status":"success"} 200`.
 *
 * @example
 * curl("POST", "http://127.0.0.1:3000/api/resource")
 * // curl -s -w ' %{http_code}\n' -X POST http://127.0.0.1:3000/api/resource
 */
export function curl(method: string, url: string): string {
  return `curl -s -w ' %{http_code}\\n' -X ${method} ${url}`;
}

/** Two overlapping requests: with a handler that takes a while, one gets 200 and the other 423. */
export function curlTwice(method: string, url: string): string {
  return `for i in 1 2; do ${curl(method, url)} & done; wait`;
}

/** The curl lines every example prints: the seed's route once and twice at once, and one order paid twice at once. */
export function seedCurlLines(url: string): CurlLine[] {
  return [
    { say: '200 {"status":"success"}', run: curl("POST", `${url}/api/resource`) },
    {
      say: 'two at once: one 200, one 423 {"error":"Resource is locked"}',
      run: curlTwice("POST", `${url}/api/resource`),
    },
    { say: "the same order twice at once: one 200, one 423", run: curlTwice("POST", `${url}/orders/42/pay`) },
  ];
}

/** Prints what is listening where, where the locks live, and curl lines to try. */
export function printBanner(
  title: string,
  url: string,
  backend: Pick<ExampleBackend, "description">,
  lines: readonly CurlLine[],
): void {
  const out = [`${title} listening on ${url}`, backend.description, "", "Try:"];
  for (const line of lines) out.push(`  # ${line.say}`, `  ${line.run}`);
  out.push("", "Ctrl-C stops it.");
  console.log(out.join("\n"));
}
