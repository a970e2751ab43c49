import type { Redis } from "ioredis";

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
 * matching the prefix and `pattern`, a Redis glob on the resource name. Each SCAN call is bounded
 * by `timeout`.
 */
export async function scanResources(
  clients: readonly Redis[],
  prefix: string,
  pattern: string,
  timeout: number,
): Promise<ScanResult> {
  const found = new Set<string>();
  const failed: ScanResult["failed"] = [];
  const match = escapeGlob(prefix) + pattern;
  await Promise.all(
    clients.map(async (client, instance) => {
      try {
        let cursor = "0";
        do {
          const [next, keys] = await bounded(
            client.scan(cursor, "MATCH", match, "COUNT", 1000, "TYPE", "string"),
            timeout,
          );
          for (const key of keys) {
            if (found.size < MAX_RESOURCES && !LIBRARY_KEY.test(key)) found.add(key.slice(prefix.length));
          }
          cursor = next;
        } while (cursor !== "0" && found.size < MAX_RESOURCES);
      } catch (error) {
        failed.push({ instance, error: (error as Error).message });
      }
    }),
  );
  failed.sort((a, b) => a.instance - b.instance);
  return { resources: [...found].sort(), failed, truncated: found.size >= MAX_RESOURCES };
}

/**
 * The keys the library keeps beside each lock: a fence counter (a string that never expires) is no
 * stuck lock, and must never be deleted (fences would go back). Core refuses these names as resources.
 */
const LIBRARY_KEY = /:redlock-kit:(?:fence|waiters)$/;

/** The prefix matched literally, whatever glob characters it holds. */
const escapeGlob = (text: string) => text.replace(/[*?[\]\\]/g, "\\$&");

function bounded<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`No answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
