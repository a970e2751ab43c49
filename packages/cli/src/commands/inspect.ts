import type { LockInspection } from "@redlock-kit/core";
import {
  duration,
  holderCount,
  inspectionJson,
  otherType,
  printable,
  table,
  unanswered,
  verdictState,
} from "../format.js";
import { EXIT, type Verb } from "../io.js";

/** One sentence: the quorum's verdict, and what holds data of another type at the key. */
export function verdict(view: LockInspection): string {
  const total = view.instances.length;
  const resource = printable(view.resource);
  const name = view.key === view.resource ? resource : `${resource} (key ${printable(view.key)})`;
  const { other, silent } = unanswered(view);
  const otherData = (data: string) =>
    `${data} of another type at the key on ${other} of ${total} instances (WRONGTYPE): not a lock of this library`;
  const state = verdictState(view);
  if (state === "not a lock") {
    return `${name}: ${otherData("data")}, and no holder can have the quorum (${view.quorum}). Another application uses the name, or --prefix is not the Redlock's keyPrefix.`;
  }
  if (state === "unknown") {
    return `${name}: unknown, ${silent} of ${total} instances did not answer (quorum ${view.quorum}).`;
  }
  const left = other > 0 ? ` ${otherData("Data")}, left as it is.` : "";
  if (state === "free") {
    const stale = view.held > 0 ? ` Keys left on ${view.held} of ${total} instances expire by themselves.` : "";
    return `${name} is free (quorum ${view.quorum}).${stale}${left}`;
  }
  // a key without expiry (set by hand, or without PX) is never freed by time
  const ttl =
    view.ttlMs !== undefined && view.ttlMs < 0 ? "with no ttl: it never expires" : `for ${duration(view.ttlMs)} more`;
  return `${name} is held by ${view.holder} on ${holderCount(view)} of ${total} instances (quorum ${view.quorum}) ${ttl}.${left}`;
}

export function instanceTable(view: LockInspection): string {
  const rows = view.instances.map((instance) =>
    otherType(instance)
      ? [instance.description, "not a lock", "-", "-", "data of another type at the key (WRONGTYPE)"]
      : [
          instance.description,
          instance.state,
          duration(instance.ttlMs),
          instance.holder ?? "-",
          instance.error?.message ?? "",
        ],
  );
  return table(["INSTANCE", "STATE", "TTL", "HOLDER", ""], rows);
}

export const inspect: Verb = async (args, instances, io) => {
  const view = await instances.inspect(args.target as string);
  if (args.json) io.stdout.write(`${JSON.stringify(inspectionJson(view))}\n`);
  else io.stdout.write(`${verdict(view)}\n\n${instanceTable(view)}\n`);
  return VERDICT_EXIT[verdictState(view)];
};

/** Data of another type at the key is no lock, nor an outage: the command line names no lock (2). */
const VERDICT_EXIT = { held: EXIT.done, free: EXIT.nothing, unknown: EXIT.unavailable, "not a lock": EXIT.usage };
