/** What one counter route did under concurrent increments. */
export interface RaceResult {
  readonly route: string;
  readonly requests: number;
  /** 200s: each one is an increment the server reported as done. */
  readonly ok: number;
  readonly locked: number;
  /** Any other status (e.g. 503 if the lock service went away). */
  readonly other: number;
  /** The counter value if no update were lost: one per 200. */
  readonly expected: number;
  readonly actual: number;
  readonly lost: number;
}

/**
 * Fires `requests` concurrent POSTs at `/counters/<counter>/<action>` and reads the counter back.
 *
 * @example
 * const result = await raceCounter("http://127.0.0.1:3000", "visits", "increment", 50);
 * result.lost; // 0
 */
export async function raceCounter(
  baseUrl: string,
  counter: string,
  action: "unsafe-increment" | "increment",
  requests: number,
): Promise<RaceResult> {
  const path = `/counters/${encodeURIComponent(counter)}/${action}`;
  const statuses = await Promise.all(
    Array.from({ length: requests }, async () => {
      const response = await fetch(`${baseUrl}${path}`, { method: "POST" });
      // read the body so that the connection goes back to the pool
      await response.arrayBuffer();
      return response.status;
    }),
  );
  const ok = statuses.filter((status) => status === 200).length;
  const locked = statuses.filter((status) => status === 423).length;
  const response = await fetch(`${baseUrl}/counters/${encodeURIComponent(counter)}`);
  const { value } = (await response.json()) as { value: number };
  return {
    route: `POST ${path}`,
    requests,
    ok,
    locked,
    other: requests - ok - locked,
    expected: ok,
    actual: value,
    lost: ok - value,
  };
}

const COLUMNS: readonly [string, (result: RaceResult) => string | number][] = [
  ["route", (result) => result.route],
  ["requests", (result) => result.requests],
  ["200", (result) => result.ok],
  ["423", (result) => result.locked],
  ["other", (result) => result.other],
  ["expected", (result) => result.expected],
  ["actual", (result) => result.actual],
  ["lost updates", (result) => result.lost],
];

/** A plain-text table, first column left-aligned, numbers right-aligned. */
export function formatTable(results: readonly RaceResult[]): string {
  const cells = [COLUMNS.map(([title]) => title), ...results.map((r) => COLUMNS.map(([, read]) => String(read(r))))];
  const widths = COLUMNS.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? "").length)));
  return cells
    .map((row) =>
      row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join("  "),
    )
    .join("\n");
}
