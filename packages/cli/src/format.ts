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
 * What an instance's error answer says that no outage does: data of another type at the key
 * (WRONGTYPE: another application uses the name, or the prefix is not the Redlock's), or a refusal
 * of the CLI's URL: a user without the command (NOPERM), a wrong password (WRONGPASS, NOAUTH), a
 * replica (READONLY), a Cluster node taken for a plain server (MOVED, ASK, CROSSSLOT). Core counts
 * each as unknown; the instance answered, and waiting changes nothing.
 */
export type Problem = "other type" | "refused" | "replica" | "cluster node";

const PROBLEMS: readonly (readonly [RegExp, Problem])[] = [
  [/^WRONGTYPE\b/, "other type"],
  [/^(NOPERM|NOAUTH|WRONGPASS)\b/, "refused"],
  // READONLY: a replica's answer to a write; "replica of …": the CLI's own, from its role (replica.ts)
  [/^(READONLY|replica)\b/, "replica"],
  [/^(MOVED|ASK|CROSSSLOT)\b/, "cluster node"],
];

export function problemOf(instance: { readonly error?: Error | string }): Problem | undefined {
  const { error } = instance;
  const message = typeof error === "string" ? error : error?.message;
  return message === undefined ? undefined : PROBLEMS.find(([answer]) => answer.test(message))?.[1];
}

/** Data of another type at the key: no lock of this library there. */
export const otherType = (instance: { readonly error?: Error }) => problemOf(instance) === "other type";

/** An instance that refused the CLI: what it holds is not known, and only a change of its URL will tell. */
export const refused = (instance: { readonly error?: Error | string }) => {
  const problem = problemOf(instance);
  return problem !== undefined && problem !== "other type";
};

/** What an instance's problem means, after its name: "refused: NOPERM …", "is a replica (READONLY): …". */
export function problemText(instance: { readonly error?: Error | string }): string {
  const { error } = instance;
  const message = (typeof error === "string" ? error : error?.message) ?? "";
  switch (problemOf(instance)) {
    case "other type":
      return "data of another type at the key (WRONGTYPE)";
    case "replica":
      return `is a ${message.startsWith("READONLY") ? "replica (READONLY)" : message}: give its master's URL`;
    case "cluster node":
      // the CLI takes a node for its Cluster only when it answers CLUSTER SLOTS (see connect.ts)
      return `is a Cluster node (${message.split(" ")[0]}) taken for a plain server: it refused CLUSTER SLOTS (may its user run it?), or could not be reached at the start`;
    default:
      return `refused: ${message}`;
  }
}

/**
 * How many of `view`'s instances hold data of another type at the key, refused the CLI, and did
 * not answer (an outage).
 */
export function unanswered(view: LockInspection): { other: number; refusals: number; silent: number } {
  const other = view.instances.filter(otherType).length;
  const refusals = view.instances.filter(refused).length;
  return { other, refusals, silent: view.unknown - other - refusals };
}

/** The CLI's verdict: core's, or why there is none. */
export type Verdict = LockInspection["state"] | "not a lock" | "misconfigured";

/**
 * Core's verdict when it has one. When it is unknown: "not a lock" when data of another type at
 * the key alone leaves none (no holder can have a quorum, yet core's `isLocked()` answers neither:
 * a `LockConfigurationError`); "misconfigured" when the instances that refused the CLI do, whatever
 * the silent ones answer once back (they cannot give the holder a quorum, nor leave it free while
 * the refusals could hold it); else "unknown", which waiting for the silent ones may settle.
 */
export function verdictState(view: LockInspection): Verdict {
  if (view.state !== "unknown") return view.state;
  const { refusals, silent } = unanswered(view);
  const held = holderCount(view);
  if (held + silent + refusals < view.quorum) return "not a lock";
  const settles = held + silent >= view.quorum || held + refusals < view.quorum;
  return settles ? "unknown" : "misconfigured";
}

/**
 * One instance's cell in a row: its key's ttl, "-" when free, "?" when it did not answer, "!" when
 * it holds data of another type, "x" when it refused the CLI; a key held by another holder than the
 * row's is marked with "*".
 */
export function instanceCell(instance: InstanceInspection, holder: string | undefined): string {
  if (otherType(instance)) return "!";
  if (refused(instance)) return "x";
  if (instance.state === "unknown") return "?";
  if (instance.state === "free") return "-";
  return duration(instance.ttlMs) + (instance.holder === holder ? "" : "*");
}

/** On how many instances the row's holder (the one found most often) holds the key. */
export const holderCount = (view: LockInspection) =>
  view.instances.filter((instance) => instance.holder !== undefined && instance.holder === view.holder).length;

/**
 * "held 2/3" (by the row's holder), "free", "free (1/3 stale)", "unknown (1/3 silent)", "not a lock
 * (2/3 other type)", "no verdict (2/3 refused)".
 */
export function quorumCell(view: LockInspection): string {
  const total = view.instances.length;
  const state = verdictState(view);
  if (state === "held") return `held ${holderCount(view)}/${total}`;
  if (state === "free") return view.held === 0 ? "free" : `free (${view.held}/${total} stale)`;
  const { other, refusals, silent } = unanswered(view);
  if (state === "unknown") return `unknown (${silent}/${total} silent)`;
  return state === "not a lock"
    ? `not a lock (${other}/${total} other type)`
    : `no verdict (${refusals}/${total} refused)`;
}

/**
 * Instances as JSON data: an Error would serialize as {}, so it becomes its message, and the
 * problem it says (`problemOf`) comes with it.
 */
function plainInstances<I extends { readonly error?: Error }>(instances: readonly I[]) {
  return instances.map(({ error, ...instance }) => {
    const problem = problemOf({ error });
    return {
      ...instance,
      ...(error === undefined ? {} : { error: error.message }),
      ...(problem === undefined ? {} : { problem }),
    };
  });
}

/** Core's inspection (its `state` included, as it is) with the CLI's `verdict`. */
export const inspectionJson = (view: LockInspection) => ({
  ...view,
  verdict: verdictState(view),
  instances: plainInstances(view.instances),
});

export const releaseJson = (result: ForcedRelease) => ({ ...result, instances: plainInstances(result.instances) });
