import { createInterface } from "node:readline/promises";
import type { LockInspection } from "@redlock-kit/core";
import { printable, releaseJson } from "../format.js";
import { type CliIo, EXIT, tooFew, type Verb } from "../io.js";
import { verdict } from "./inspect.js";

/**
 * Deletes the lock's key on every instance, whoever holds it. Shows what it is about to delete and
 * asks first, unless --yes; when stdin is not a terminal nobody can answer, so it refuses instead.
 */
export const release: Verb = async (args, instances, io) => {
  const resource = args.target as string;
  const before = await instances.inspect(resource);
  if (before.held === 0 && before.unknown === 0) {
    if (args.json) io.stdout.write(`${JSON.stringify({ ...notHeld(before), deleted: 0 })}\n`);
    else io.stdout.write(`${verdict(before)} Nothing to delete.\n`);
    return EXIT.nothing;
  }
  if (!args.yes) {
    if (io.stdin.isTTY !== true) {
      io.stderr.write(
        `redlock-kit: not deleting ${printable(resource)} without confirmation: stdin is not a terminal. Add --yes to delete it anyway.\n`,
      );
      return EXIT.usage;
    }
    io.stderr.write(`${verdict(before)}\n`);
    const question = "Delete it on every instance? A holder that is still running goes on without its lock. [y/N] ";
    if (!(await confirm(io, question))) {
      io.stderr.write("Nothing deleted.\n");
      return EXIT.nothing;
    }
    // the answer may come long after the question: a holder the operator was not shown (the one
    // shown released, another took the key) is not deleted on a yes meant for someone else
    const now = await instances.inspect(resource);
    if (newHolder(before, now)) {
      io.stderr.write(`${verdict(now)}\nIt changed hands since you were asked: nothing deleted. Run release again.\n`);
      return EXIT.nothing;
    }
  }
  const result = await instances.forceRelease(resource);
  const total = result.instances.length;
  if (args.json) io.stdout.write(`${JSON.stringify(releaseJson(result))}\n`);
  else io.stdout.write(`Deleted ${printable(result.key)} on ${result.deleted} of ${total} instances.\n`);
  for (const { description, error } of result.instances) {
    if (error)
      io.stderr.write(`redlock-kit: ${description} did not answer (${error.message}): the key may remain there.\n`);
  }
  if (tooFew(total - result.unknown, instances)) return EXIT.unavailable;
  return result.deleted > 0 ? EXIT.done : EXIT.nothing;
};

/** Whether an instance now holds a key that is neither the holder named in the question nor the one it had then. */
function newHolder(before: LockInspection, now: LockInspection): boolean {
  return now.instances.some(
    ({ instance, holder }) =>
      holder !== undefined && holder !== before.holder && holder !== before.instances[instance]?.holder,
  );
}

function notHeld(view: LockInspection) {
  return {
    resource: view.resource,
    key: view.key,
    unknown: 0,
    instances: view.instances.map(({ instance, description }) => ({ instance, description, deleted: false })),
  };
}

/** Asks on the terminal (the question goes to stderr, keeping stdout for results); Ctrl-C or Ctrl-D answer no. */
async function confirm(io: CliIo, question: string): Promise<boolean> {
  const cancel = new AbortController();
  const rl = createInterface({ input: io.stdin, output: io.stderr, terminal: true });
  rl.once("SIGINT", () => cancel.abort());
  rl.once("close", () => cancel.abort());
  const onAbort = () => cancel.abort();
  io.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const answer = await rl.question(question, { signal: cancel.signal });
    return /^y(es)?$/i.test(answer.trim());
  } catch {
    io.stderr.write("\n");
    return false;
  } finally {
    io.signal?.removeEventListener("abort", onAbort);
    rl.close();
  }
}
