import { Cluster, type Redis } from "ioredis";
import { bounded } from "./bounded.js";

/** More keys than this and `list` stops scanning and says so: narrow the pattern. */
export const MAX_RESOURCES = 10_000;

/** What the SCAN of every instance found. */
export interface ScanResult {
  /** Resource names (the keys without the prefix), sorted. */
  readonly resources: string[];
  /** Instances whose SCAN failed or timed out, with the reason. */
  readonly failed: { readonly instance: number; readonly error: string }[];
  /** True when the scan stopped at `MAX_RESOURCES`. */
  readonly truncated: boolean;
}

/**
 * SCANs every instance (never KEYS, which blocks Redis for the whole key space) for string keys
 * matching the prefix and `pattern`, a Redis glob on the resource name; a Cluster on every master,
 * and it counts as scanned only when each of them answered. Each SCAN call is bounded by `timeout`.
 * An Error in place of a client is an instance not to scan (a replica), failed with it.
 */
export async function scanResources(
  clients: readonly (Redis | Cluster | Error)[],
  prefix: string,
  pattern: string,
  timeout: number,
): Promise<ScanResult> {
  const found = new Set<string>();
  const failed: ScanResult["failed"] = [];
  const match = escapeGlob(prefix) + pattern;
  const scan = async (server: Redis) => {
    let cursor = "0";
    do {
      const [next, keys] = await bounded(server.scan(cursor, "MATCH", match, "COUNT", 1000, "TYPE", "string"), timeout);
      for (const key of keys) {
        if (found.size < MAX_RESOURCES && !LIBRARY_KEY.test(key)) found.add(key.slice(prefix.length));
      }
      cursor = next;
    } while (cursor !== "0" && found.size < MAX_RESOURCES);
  };
  await Promise.all(
    clients.map(async (client, instance) => {
      try {
        if (client instanceof Error) throw client;
        if (!(client instanceof Cluster)) return await scan(client);
        // every master is scanned to the end (what the others hold is listed), then one failure fails the instance
        const masters = mastersOf(client);
        const scans = await Promise.allSettled(
          masters.map(([, master]) => (master instanceof Error ? Promise.reject(master) : scan(master))),
        );
        for (const [index, result] of scans.entries()) {
          if (result.status === "rejected") throw new Error(`master ${masters[index]?.[0]}: ${result.reason.message}`);
        }
      } catch (error) {
        failed.push({ instance, error: (error as Error).message });
      }
    }),
  );
  failed.sort((a, b) => a.instance - b.instance);
  return { resources: [...found].sort(), failed, truncated: found.size >= MAX_RESOURCES };
}

const SLOTS = 16_384;

/**
 * The master of every hash slot, as host:port and its client, or an Error for a master whose
 * connection the Cluster dropped (stopped): its keys cannot be read, the others' still can. A slot
 * without a master throws.
 */
function mastersOf(cluster: Cluster): [string, Redis | Error][] {
  if (cluster.status !== "ready") throw new Error(`the Cluster is not connected (${cluster.status})`);
  const clients = new Map(cluster.nodes("master").map((node) => [`${node.options.host}:${node.options.port}`, node]));
  const masters = new Map<string, Redis | Error>();
  for (let slot = 0; slot < SLOTS; slot++) {
    const where = cluster.slots[slot]?.[0];
    if (where === undefined) throw new Error(`no master serves hash slot ${slot}`);
    masters.set(where, clients.get(where) ?? new Error("not connected"));
  }
  return [...masters];
}

/**
 * The keys the library keeps beside each lock: a fence counter (a string that never expires) is no
 * stuck lock, and must never be deleted (fences would go back). Core refuses these names as resources.
 */
const LIBRARY_KEY = /:redlock-kit:(?:fence|waiters)$/;

/** The prefix matched literally, whatever glob characters it holds. */
const escapeGlob = (text: string) => text.replace(/[*?[\]\\]/g, "\\$&");
