import { createInterface } from "node:readline/promises";
import type { ForcedRelease, LockInspection } from "@redlock-kit/core";
import { otherType, printable, problemText, refused, releaseJson, unanswered, verdictState } from "../format.js";
import { type CliIo, EXIT, tooFew, type Verb } from "../io.js";
import { instanceTable, verdict } from "./inspect.js";

/**
 * Deletes the lock's key on every instance, whoever holds it. Shows what it is about to delete and
 * asks first, unless --yes; when stdin is not a terminal nobody can answer, so it refuses instead.
 * After a yes each instance deletes only the holder shown.
 */
export const release: Verb = async (args, instances, io) => {
  const resource = args.target as string;
  const before = await instances.inspect(resource);
  // data of another type at the key is never deleted (core reads it first, and gets WRONGTYPE):
  // someone else's data, which no lock of this library can be. Instances that refused the CLI
  // leave no verdict either: what it cannot see there, it does not clear elsewhere.
  const state = verdictState(before);
  const { refusals, silent: silentBefore } = unanswered(before);
  if (state === "not a lock" || state === "misconfigured") {
    // the verdict names the refusing instances "below": their rows say which, and what to fix
    const rows = refusals > 0 ? `\n${instanceTable(before)}\n` : "";
    if (args.json) io.stdout.write(`${JSON.stringify(notHeld(before))}\n`);
    else io.stdout.write(`${verdict(before)} Nothing deleted.\n${rows}`);
    return EXIT.usage;
  }
  if (before.held === 0 && silentBefore + refusals === 0) {
    if (args.json) io.stdout.write(`${JSON.stringify(notHeld(before))}\n`);
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
  }
  // the answer may come long after the question: a holder the operator was not shown (the one
  // shown released, another took the key) is not deleted on a yes meant for someone else. Core
  // compares and deletes in one step on each instance, so not even one that took the key a moment
  // before the delete is.
  const result = await instances.forceRelease(resource, args.yes ? undefined : { holder: shown(before) });
  const total = result.instances.length;
  if (args.json) io.stdout.write(`${JSON.stringify(releaseJson(result))}\n`);
  else if (result.deleted > 0 || result.kept === 0)
    io.stdout.write(`Deleted ${printable(result.key)} on ${result.deleted} of ${total} instances.\n`);
  if (result.kept > 0) io.stderr.write(`${changedHands(result)}\n`);
  for (const instance of result.instances) {
    const { description, error } = instance;
    if (otherType(instance)) {
      io.stderr.write(
        `redlock-kit: ${description} holds data of another type at ${printable(result.key)} (WRONGTYPE), not a lock of this library: left as it is.\n`,
      );
    } else if (refused(instance)) {
      io.stderr.write(`redlock-kit: ${description} ${problemText(instance)}; the key may remain there.\n`);
    } else if (error) {
      io.stderr.write(`redlock-kit: ${description} did not answer (${error.message}): the key may remain there.\n`);
    }
  }
  // an instance holding data of another type answered: no lock's key remains there
  const missed = result.instances.filter((instance) => instance.error !== undefined && !otherType(instance)).length;
  if (!tooFew(total - missed, instances)) return result.deleted > 0 ? EXIT.done : EXIT.nothing;
  // the instances that refused the CLI keep the delete from a quorum even once every silent one
  // is back: the command line is to be changed (2), not run again later (3)
  return tooFew(total - result.instances.filter(refused).length, instances) ? EXIT.usage : EXIT.unavailable;
};

/**
 * The holder the question showed on each instance: the one found there, else the one named (an
 * instance that was free or did not answer may hold the named lock's key by now). Undefined when
 * none was: nothing there is deleted.
 */
function shown(view: LockInspection): (string | undefined)[] {
  return view.instances.map(({ holder }) => holder ?? view.holder);
}

function changedHands(result: ForcedRelease): string {
  const holders = new Set(result.instances.flatMap(({ holder }) => (holder === undefined ? [] : [holder])));
  const kept = `held by ${[...holders].join(", ")} on ${result.kept} of ${result.instances.length} instances, kept there.`;
  const none = result.deleted === 0 ? " Nothing deleted. Run release again." : "";
  return `It changed hands since you were asked: ${kept}${none}`;
}

/** What `--json` says when nothing was deleted for what the lock's inspection showed: the verdict, and why. */
function notHeld(view: LockInspection) {
  return {
    resource: view.resource,
    key: view.key,
    deleted: 0,
    unknown: 0,
    kept: 0,
    verdict: verdictState(view),
    reason: verdict(view),
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
