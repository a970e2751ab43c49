/**
 * Has a Redlock's connections say who they are before a test's first call. A fresh connection
 * votes only once its server answered INFO (core's quorum/server-identity.ts), and a call waits for
 * that at most its per-instance timeout: 100 ms for a 1 s lock, which a loaded machine misses, so a
 * first single attempt with a short ttl can be answered unavailable (a 503) instead of taking the
 * lock or meeting its holder. The identity is the client's, shared by every Redlock built on it:
 * warming one Redlock warms its clients for all. A reconnect (a restarted server) is asked again.
 */

/** What warmUp needs of a Redlock: core's own tests pass one built from its sources. */
interface Acquirer {
  acquire(
    resource: string,
    ttl: number,
    options: { retryCount: number; instanceTimeout: number; fencing: boolean },
  ): Promise<{ release(): Promise<boolean> }>;
  quit(): Promise<void>;
}

/**
 * Takes and releases a 60 s lock: each attempt waits up to 1 s for the answers, and it retries, whatever
 * the Redlock's defaults say (`retryCount: 0`, a short `instanceTimeout`; not one whose defaults set
 * `wait`), unfenced (a test's first fence stays 1). `quit`: `dlm` was built for this alone (on clients handed to it, which stay open).
 */
export async function warmUp(dlm: Acquirer, options: { quit?: boolean } = {}): Promise<void> {
  try {
    await (await dlm.acquire("warm-up", 60_000, { retryCount: 3, instanceTimeout: 1000, fencing: false })).release();
  } finally {
    if (options.quit) await dlm.quit();
  }
}
