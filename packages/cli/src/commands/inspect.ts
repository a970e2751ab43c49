import type { LockInspection } from "@redlock-kit/core";
import {
  duration,
  holderCount,
  inspectionJson,
  otherType,
  printable,
  problemText,
  refused,
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
  const { other, refusals, silent } = unanswered(view);
  const otherData = (data: string) =>
    `${data} of another type at the key on ${other} of ${total} instances (WRONGTYPE): not a lock of this library`;
  const refusedCli = `${refusals} of ${total} instances refused the CLI, a configuration to fix (below)`;
  // the instances that refused, when the verdict is not theirs: each row says why
  const refusalNote = refusals > 0 ? ` ${refusedCli}.` : "";
  const state = verdictState(view);
  if (state === "misconfigured") return `${name}: no verdict (quorum ${view.quorum}): ${refusedCli}, not an outage.`;
  if (state === "not a lock") {
    return `${name}: ${otherData("data")}, and no holder can have the quorum (${view.quorum}). Another application uses the name, or --prefix is not the Redlock's keyPrefix.${refusalNote}`;
  }
  if (state === "unknown") {
    return `${name}: unknown, ${silent} of ${total} instances did not answer (quorum ${view.quorum}).${refusalNote}`;
  }
  const left = (other > 0 ? ` ${otherData("Data")}, left as it is.` : "") + refusalNote;
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
    otherType(instance) || refused(instance)
      ? [instance.description, otherType(instance) ? "not a lock" : "refused", "-", "-", problemText(instance)]
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

/**
 * Data of another type at the key is no lock, nor an outage: the command line names no lock (2).
 * Instances that refused the CLI (a user, a password, a replica's or a Cluster node's URL) answered:
 * no outage either, and no wait will give a verdict, only a change of the command line (2).
 */
const VERDICT_EXIT = {
  held: EXIT.done,
  free: EXIT.nothing,
  unknown: EXIT.unavailable,
  "not a lock": EXIT.usage,
  misconfigured: EXIT.usage,
} as const;
