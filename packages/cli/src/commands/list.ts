import type { LockInspection } from "@redlock-kit/core";
import type { CliArgs } from "../args.js";
import { UsageError } from "../args.js";
import { checkTarget, type Instances } from "../connect.js";
import {
  duration,
  inspectionJson,
  instanceCell,
  printable,
  problemOf,
  problemText,
  quorumCell,
  refused,
  table,
  unanswered,
} from "../format.js";
import { EXIT, tooFew, type Verb } from "../io.js";
import { MAX_RESOURCES, type ScanResult, scanResources } from "../scan.js";

/** The locks a SCAN found, each inspected on every instance. */
export interface Listing {
  readonly scan: ScanResult;
  /** Resources held (or unknown) somewhere when inspected; one that expired since the SCAN is left out. */
  readonly locks: LockInspection[];
}

/** A resource read only for the instance check that comes with it; what it holds is ignored. */
const UNUSED_RESOURCE = "redlock-kit:cli:instance-check";

/** Whether core refuses `resource` under `prefix` as a name (checkTarget's UsageError). */
const refusedName = (prefix: string, resource: string) =>
  checkTarget(prefix, resource).then(
    () => false,
    (error: unknown) => {
      if (error instanceof UsageError) return true;
      throw error;
    },
  );

/** How many resources are inspected at once. */
const CONCURRENCY = 32;

export async function collect(args: CliArgs, instances: Instances): Promise<Listing> {
  // a replica's keys are its master's copy: its SCAN would count toward the quorum scanned; a
  // server that did not answer CLUSTER SLOTS may be one node of a Cluster
  const scannable = instances.clients.map((client, index) => {
    const notAsked = instances.notAsked[index];
    return notAsked === undefined ? client : new Error(notAsked);
  });
  const scanned = await scanResources(scannable, args.prefix, args.target ?? "*", args.timeout);
  const failed = scanned.failed.map(({ instance, error }) => ({ instance, error: instances.reason(instance, error) }));
  const scan = { ...scanned, failed };
  // inspect() checks the instances first (one server listed twice rejects: its key would count
  // twice); with nothing to inspect, one read of a name nobody locks does that check
  if (scan.resources.length === 0) await instances.dlm.inspect(UNUSED_RESOURCE);
  const views = await mapLimit(scan.resources, CONCURRENCY, (resource) =>
    // a key whose name core refuses as a resource (empty, over 1024 characters) is no lock: skipped.
    // Core refuses with a plain TypeError or RangeError, as a bug would throw: its own check of the
    // name, without Redis, tells them apart (a bug's would hide a lock)
    instances.inspect(resource).catch(async (error: unknown) => {
      if (await refusedName(args.prefix, resource)) return undefined;
      throw error;
    }),
  );
  const locks = views.filter((view): view is LockInspection => view !== undefined);
  // data of another type at the key is no lock: a key whose only other answers are such data is not
  // listed; an instance that did not answer, or refused the CLI, may hold one there
  return {
    scan,
    locks: locks.filter((view) => {
      const { refusals, silent } = unanswered(view);
      return view.held > 0 || silent + refusals > 0;
    }),
  };
}

export function listingJson(listing: Listing, instances: Instances) {
  return {
    instances: instances.names,
    quorum: instances.dlm.quorum,
    unavailable: listing.scan.failed.map(({ instance, error }) => {
      const problem = problemOf({ error });
      return { instance: instances.names[instance], error, ...(problem === undefined ? {} : { problem }) };
    }),
    truncated: listing.scan.truncated,
    locks: listing.locks.map(inspectionJson),
  };
}

/** The table, or a line saying that nothing matched (or that too few instances answered to tell). */
export function renderListing(listing: Listing, instances: Instances, pattern: string): string {
  if (listing.locks.length === 0) {
    return scannedTooFew(listing, instances)
      ? `Cannot tell which locks match ${JSON.stringify(pattern)}: fewer than a quorum of instances could be scanned.`
      : `No locks match ${JSON.stringify(pattern)}.`;
  }
  const rows = listing.locks.map((view) => [
    printable(view.resource),
    quorumCell(view),
    duration(view.ttlMs),
    view.holder ?? "-",
    ...view.instances.map((instance) => instanceCell(instance, view.holder)),
  ]);
  const text = table(["RESOURCE", "QUORUM", "TTL", "HOLDER", ...instances.names], rows);
  const cells = rows.flatMap((row) => row.slice(4));
  const legend = [
    ...(cells.some((cell) => cell.endsWith("*")) ? ["* another holder than the row's"] : []),
    ...(cells.includes("!") ? ["! data of another type at the key: not a lock of this library"] : []),
    ...(cells.includes("x") ? ["x refused the CLI, a configuration to fix: inspect the resource to see why"] : []),
  ];
  return [text, ...legend].join("\n");
}

/** Lines about instances that could not be scanned, or a scan cut short. */
export function listingWarnings(listing: Listing, instances: Instances): string[] {
  const lines = listing.scan.failed.map(({ instance, error }) => {
    const name = instances.names[instance];
    if (problemOf({ error }) === "replica") return `${name} ${problemText({ error })}; not scanned.`;
    return refused({ error })
      ? `${name} refused the CLI's SCAN, a configuration to fix: ${error}`
      : `${name} could not be scanned: ${error}`;
  });
  if (listing.scan.truncated) lines.push(`Stopped after ${MAX_RESOURCES} keys: narrow the pattern to see the rest.`);
  return lines;
}

export const list: Verb = async (args, instances, io) => {
  const listing = await collect(args, instances);
  const pattern = args.target ?? "*";
  if (args.json) io.stdout.write(`${JSON.stringify(listingJson(listing, instances))}\n`);
  else io.stdout.write(`${renderListing(listing, instances, pattern)}\n`);
  for (const line of listingWarnings(listing, instances)) io.stderr.write(`redlock-kit: ${line}\n`);
  if (!scannedTooFew(listing, instances)) return listing.locks.length > 0 ? EXIT.done : EXIT.nothing;
  // the instances that refused the CLI leave fewer than a quorum scanned even once every silent one
  // is back: the command line is to be changed (2), not run again later (3)
  const refusals = listing.scan.failed.filter(refused).length;
  return tooFew(instances.clients.length - refusals, instances) ? EXIT.usage : EXIT.unavailable;
};

/** Whether fewer than a quorum of instances could be scanned: a lock may be held where nobody looked. */
const scannedTooFew = (listing: Listing, instances: Instances) =>
  tooFew(instances.clients.length - listing.scan.failed.length, instances);

async function mapLimit<T, R>(items: readonly T[], limit: number, map: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await map(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
