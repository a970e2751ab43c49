import { letEnd } from "../stores/keep-connecting.js";
import { canFence, type LockStore } from "../stores/store.js";
import { instanceIdentity, type RedlockInstance, type ResolvedInstance, resolveInstance } from "./instances.js";

/**
 * Turns the instance list given to `new Redlock()` (a non-empty array) into stores, refusing a list that would fake a
 * quorum (one server listed twice) or, with `fencing`, an instance that cannot fence. A refused
 * list leaks no connection: duplicates are found before any client is created, and the clients
 * created before a later entry failed are closed.
 */
export function resolveInstances(
  instances: readonly RedlockInstance[],
  fencing: boolean,
  lazyConnect = false,
): ResolvedInstance[] {
  const seen = new Map<unknown, number>();
  instances.forEach((instance, index) => {
    const first = seen.get(instance);
    if (first !== undefined && typeof instance === "object") {
      throw new TypeError(`instances[${index}] is the same object as instances[${first}]: it would vote twice`);
    }
    seen.set(instance, index);
  });
  const resolved: ResolvedInstance[] = [];
  try {
    for (const [index, instance] of instances.entries()) resolved.push(resolveInstance(instance, index, lazyConnect));
    checkDistinct(resolved);
    if (fencing) checkFencing(resolved.map((instance) => instance.store));
  } catch (error) {
    for (const { owned } of resolved) {
      if (owned === undefined) continue;
      letEnd(owned);
      owned.disconnect();
    }
    throw error;
  }
  return resolved;
}

/** Throws unless every store can issue fencing tokens. */
export function checkFencing(stores: readonly LockStore[]): void {
  const index = stores.findIndex((store) => !canFence(store));
  if (index !== -1) {
    throw new TypeError(
      `fencing needs every instance to support it (acquireFenced and raiseFences); instances[${index}] does not`,
    );
  }
}

/** Two entries that are the same Redis database would vote twice and fake a quorum. */
function checkDistinct(resolved: readonly ResolvedInstance[]): void {
  const seenStores = new Map<LockStore, number>();
  const seenIdentities = new Map<string, number>();
  resolved.forEach((instance, index) => {
    const sameStore = seenStores.get(instance.store);
    if (sameStore !== undefined) {
      throw new TypeError(`instances[${index}] is the same store as instances[${sameStore}]: it would vote twice`);
    }
    seenStores.set(instance.store, index);
    const identity = instanceIdentity(instance);
    if (identity === undefined) return;
    const sameServer = seenIdentities.get(identity);
    if (sameServer !== undefined) {
      throw new TypeError(
        `instances[${index}] is the same Redis database as instances[${sameServer}] (${identity}): it would vote twice`,
      );
    }
    seenIdentities.set(identity, index);
  });
}
