import type { ForcedRelease, InstanceInspection, LockInspection } from "@redlock-kit/core";

/** Columns padded to their widest cell, two spaces apart. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  return [header, ...rows]
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/**
 * Control, format and line-separator characters. Anyone who can name a lock (a resource built from
 * request data) chooses its key's name: printed raw, it would drive the operator's terminal (clear
 * it, move the cursor, draw a fake row).
 */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
const UNSAFE_ALL = new RegExp(UNSAFE.source, "gu");

/**
 * A name as text output shows it: as it is, or as a JSON string when it holds a character a
 * terminal would act on, escaped (JSON.stringify escapes C0 only: DEL, C1 and bidi controls too).
 */
export function printable(name: string): string {
  if (!UNSAFE.test(name)) return name;
  return JSON.stringify(name).replace(UNSAFE_ALL, (char) => char.split("").map(jsonEscape).join(""));
}

/** One UTF-16 code unit as a JSON escape. */
const jsonEscape = (unit: string) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`;

/** 850ms, 4.2s, 58s, 12m05s; "no ttl" for a key without expiry. */
export function duration(ms: number | undefined): string {
  if (ms === undefined) return "-";
  if (ms < 0) return "no ttl";
  if (ms < 1000) return `${ms}ms`;
  if (ms < 10_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`;
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
}

/**
 * Whether an instance answered WRONGTYPE: data of another type at the key (a hash, a list: another
 * application uses the name, or the prefix is not the Redlock's), no lock of this library. Core
 * counts it as unknown; it answered, and can hold no lock there.
 */
export const otherType = (instance: { readonly error?: Error }) => /^WRONGTYPE\b/.test(instance.error?.message ?? "");

/** How many of `view`'s instances hold data of another type at the key, and how many did not answer. */
export function unanswered(view: LockInspection): { other: number; silent: number } {
  const other = view.instances.filter(otherType).length;
  return { other, silent: view.unknown - other };
}

/**
 * Core's verdict, or "not a lock" when it is unknown only for data of another type at the key: no
 * holder can have a quorum, yet core's `isLocked()` answers neither (a `LockConfigurationError`).
 */
export function verdictState(view: LockInspection): LockInspection["state"] | "not a lock" {
  if (view.state !== "unknown") return view.state;
  return holderCount(view) + unanswered(view).silent < view.quorum ? "not a lock" : "unknown";
}

/**
 * One instance's cell in a row: its key's ttl, "-" when free, "?" when it did not answer, "!" when
 * it holds data of another type; a key held by another holder than the row's is marked with "*".
 */
export function instanceCell(instance: InstanceInspection, holder: string | undefined): string {
  if (otherType(instance)) return "!";
  if (instance.state === "unknown") return "?";
  if (instance.state === "free") return "-";
  return duration(instance.ttlMs) + (instance.holder === holder ? "" : "*");
}

/** On how many instances the row's holder (the one found most often) holds the key. */
export const holderCount = (view: LockInspection) =>
  view.instances.filter((instance) => instance.holder !== undefined && instance.holder === view.holder).length;

/** "held 2/3" (by the row's holder), "free", "free (1/3 stale)", "unknown (1/3 silent)", "not a lock (2/3 other type)". */
export function quorumCell(view: LockInspection): string {
  const total = view.instances.length;
  const state = verdictState(view);
  if (state === "held") return `held ${holderCount(view)}/${total}`;
  if (state === "free") return view.held === 0 ? "free" : `free (${view.held}/${total} stale)`;
  const { other, silent } = unanswered(view);
  return state === "unknown" ? `unknown (${silent}/${total} silent)` : `not a lock (${other}/${total} other type)`;
}

/** Instances as JSON data: an Error would serialize as {}, so it becomes its message. */
function plainInstances<I extends { readonly error?: Error }>(instances: readonly I[]) {
  return instances.map(({ error, ...instance }) => ({
    ...instance,
    ...(error === undefined ? {} : { error: error.message }),
  }));
}

export const inspectionJson = (view: LockInspection) => ({ ...view, instances: plainInstances(view.instances) });

export const releaseJson = (result: ForcedRelease) => ({ ...result, instances: plainInstances(result.instances) });
