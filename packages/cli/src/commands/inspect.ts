import type { LockInspection } from "@redlock-kit/core";
import { duration, holderCount, inspectionJson, printable, table } from "../format.js";
import { EXIT, type Verb } from "../io.js";

/** One sentence: the quorum's verdict. */
export function verdict(view: LockInspection): string {
  const total = view.instances.length;
  const resource = printable(view.resource);
  const name = view.key === view.resource ? resource : `${resource} (key ${printable(view.key)})`;
  if (view.state === "held") {
    // a key without expiry (set by hand, or without PX) is never freed by time
    const left =
      view.ttlMs !== undefined && view.ttlMs < 0 ? "with no ttl: it never expires" : `for ${duration(view.ttlMs)} more`;
    return `${name} is held by ${view.holder} on ${holderCount(view)} of ${total} instances (quorum ${view.quorum}) ${left}.`;
  }
  if (view.state === "unknown") {
    return `${name}: unknown, ${view.unknown} of ${total} instances did not answer (quorum ${view.quorum}).`;
  }
  const stale = view.held > 0 ? ` Keys left on ${view.held} of ${total} instances expire by themselves.` : "";
  return `${name} is free (quorum ${view.quorum}).${stale}`;
}

export function instanceTable(view: LockInspection): string {
  const rows = view.instances.map((instance) => [
    instance.description,
    instance.state,
    duration(instance.ttlMs),
    instance.holder ?? "-",
    instance.error?.message ?? "",
  ]);
  return table(["INSTANCE", "STATE", "TTL", "HOLDER", ""], rows);
}

export const inspect: Verb = async (args, instances, io) => {
  const view = await instances.inspect(args.target as string);
  if (args.json) io.stdout.write(`${JSON.stringify(inspectionJson(view))}\n`);
  else io.stdout.write(`${verdict(view)}\n\n${instanceTable(view)}\n`);
  if (view.state === "unknown") return EXIT.unavailable;
  return view.state === "held" ? EXIT.done : EXIT.nothing;
};
