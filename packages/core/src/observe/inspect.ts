import { createHash } from "node:crypto";
import type { InstanceFailure } from "../errors.js";
import type { LiveLocks } from "../lock/live-locks.js";
import { checkOptionNames, checkOptionsObject, OPTION_NAMES } from "../options.js";
import { acquireError } from "../quorum/acquire-failure.js";
import { fanOut, type Vote } from "../quorum/ballot.js";
import type { ServerIdentityCheck } from "../quorum/server-identity.js";
import type { LockStore, StoredKey } from "../stores/store.js";
import { deleteKey, deleteKeyIf, readKey } from "../stores/store-reads.js";
import { checkHolders, checkMs, checkResource, keysOf } from "../validate.js";

/** Options of `inspect()`, `isLocked()` and `forceRelease()`. */
export interface InspectOptions {
  /**
   * Longest wait for one instance's answer, in ms; an instance slower than this is reported as
   * `unknown`.
   * @default the Redlock's `instanceTimeout`, else 1000
   */
  instanceTimeout?: number;
}

/** Options of `forceRelease()`. */
export interface ForceReleaseOptions extends InspectOptions {
  /**
   * Delete only a holder the caller was shown, named as `inspect()` names it (`holder`, 8 hex
   * digits): one holder for every instance, or one entry per instance, in the order given to
   * `new Redlock()` (`undefined`: delete nothing there). Each instance compares the whole value
   * and deletes it in one step, so a key that changed hands since is kept (counted in `kept`).
   * Without it the key is deleted whatever it holds.
   */
  holder?: string | readonly (string | undefined)[];
}

/** held: one holder has a quorum; free: nobody has or could have one; unknown: too few instances answered to tell. */
export type QuorumState = "held" | "free" | "unknown";

/** What one instance holds under a resource's key. */
export interface InstanceInspection {
  /** The instance's index in the list given to `new Redlock()`. */
  readonly instance: number;
  /** host:port/db, the socket path, "cluster" or "memory": never credentials. */
  readonly description: string;
  readonly state: "held" | "free" | "unknown";
  /** When held: the key's remaining ttl in ms, -1 when it has no expiry. */
  readonly ttlMs?: number;
  /**
   * When held: the first 8 hex digits of the SHA-256 of the holder's value, never the value
   * itself. Equal on two instances means the same holder.
   */
  readonly holder?: string;
  /** When held: whether the holder is a live lock taken by this Redlock. */
  readonly ours?: boolean;
  /** When unknown: why the instance did not answer (name and message only). */
  readonly error?: Error;
}

/** The instances' view of one resource and the quorum's verdict. */
export interface LockInspection {
  readonly resource: string;
  /** The Redis key: the resource with the key prefix. */
  readonly key: string;
  readonly state: QuorumState;
  /** ⌊N/2⌋+1. */
  readonly quorum: number;
  /** How many instances hold the key (any holder), hold nothing, and did not answer. */
  readonly held: number;
  readonly free: number;
  readonly unknown: number;
  /** The holder found on the most instances (its fingerprint), when any instance holds the key. */
  readonly holder?: string;
  /** Whether that holder is a live lock taken by this Redlock. */
  readonly ours: boolean;
  /**
   * When held: ms until fewer than a quorum of the holder's keys remain (the quorum-th longest ttl
   * among them), -1 when they have no expiry.
   */
  readonly ttlMs?: number;
  readonly instances: readonly InstanceInspection[];
}

/** What `forceRelease()` did on each instance. */
export interface ForcedRelease {
  readonly resource: string;
  readonly key: string;
  /** Instances on which a key existed and was deleted. */
  readonly deleted: number;
  /** Instances that did not answer: the key may still be there. */
  readonly unknown: number;
  /** With the `holder` option: instances on which another holder had the key, kept. */
  readonly kept: number;
  readonly instances: readonly {
    readonly instance: number;
    readonly description: string;
    /** Undefined when the instance did not answer. */
    readonly deleted?: boolean;
    /** When kept: the holder that has the key there (its fingerprint, as `inspect()` shows it). */
    readonly holder?: string;
    readonly error?: Error;
  }[];
}

/** Without a configured `instanceTimeout`, the longest automatic one (it is 10% of the ttl, at most 1 s). */
const DEFAULT_TIMEOUT = 1000;

/**
 * Read-only views of a resource's keys, one round trip per instance, and the operators' forced
 * release. The library never calls `forceRelease` itself.
 */
export class Inspector {
  readonly #stores: readonly LockStore[];
  readonly #quorum: number;
  readonly #prefix: string;
  readonly #live: LiveLocks;
  readonly #timeout: number;
  readonly #identity: ServerIdentityCheck;

  constructor(
    stores: readonly LockStore[],
    quorum: number,
    identity: ServerIdentityCheck,
    prefix: string,
    live: LiveLocks,
    instanceTimeout: number | undefined,
  ) {
    this.#stores = stores;
    this.#quorum = quorum;
    this.#identity = identity;
    this.#prefix = prefix;
    this.#live = live;
    this.#timeout = instanceTimeout ?? DEFAULT_TIMEOUT;
  }

  inspect(resource: string, options?: InspectOptions): Promise<LockInspection> {
    return this.#inspect(resource, options, "inspect()");
  }

  async #inspect(resource: string, options: InspectOptions | undefined, call: string): Promise<LockInspection> {
    const { name, key, timeout } = this.#target(resource, options, OPTION_NAMES.inspect, call);
    // read while the instances are checked, so that a slow one costs one bound, not two
    const [votes] = await Promise.all([fanOut(this.#stores, readKey, key, timeout), this.#checked(timeout)]);
    return this.#summarize(name, key, this.#identity.withoutReplicas(votes));
  }

  /** `true` when held, `false` when free; rejects with `LockUnavailableError` when too few instances answered to tell. */
  async isLocked(resource: string, options?: InspectOptions): Promise<boolean> {
    const inspection = await this.#inspect(resource, options, "isLocked()");
    if (inspection.state !== "unknown") return inspection.state === "held";
    const causes: InstanceFailure[] = [];
    for (const { instance, error } of inspection.instances) if (error) causes.push({ instance, error });
    const message = `Lock state unknown: ${inspection.unknown} of ${this.#stores.length} instances did not answer`;
    // data of another type at the key (WRONGTYPE) is a wrong deployment, as for an acquisition: no outage
    throw acquireError([inspection.resource], { kind: "unavailable", causes, message }, 0);
  }

  async forceRelease(resource: string, options?: ForceReleaseOptions): Promise<ForcedRelease> {
    const { name, key, timeout } = this.#target(resource, options, OPTION_NAMES.forceRelease, "forceRelease()");
    const holders =
      options !== undefined && Object.hasOwn(options, "holder")
        ? checkHolders("options.holder", options.holder, this.#stores.length)
        : undefined;
    await this.#checked(timeout);
    // with holders, nothing but the value read is deleted: a compare-and-delete, never a DEL
    const heldBy = (store: LockStore, key: string, index: number) =>
      deleteKeyIf(store, key, (value) => fingerprint(value) === holders?.[index]);
    const votes = await fanOut<boolean | string | null, string>(
      this.#stores,
      holders ? heldBy : deleteKey,
      key,
      timeout,
    );
    let deleted = 0;
    let unknown = 0;
    let kept = 0;
    const instances = votes.map((vote, instance) => {
      const description = this.#describe(instance);
      if (!vote.ok) {
        unknown++;
        return { instance, description, error: plainError(vote.error) };
      }
      if (typeof vote.value === "string") {
        kept++;
        return { instance, description, deleted: false, holder: fingerprint(vote.value) };
      }
      if (vote.value === true) deleted++;
      return { instance, description, deleted: vote.value === true };
    });
    return { resource: name, key, deleted, unknown, kept, instances };
  }

  #target(resource: string, options: InspectOptions | undefined, known: ReadonlySet<string>, call: string) {
    const name = checkResource(resource);
    checkOptionsObject("options", options);
    checkOptionNames(options, known, call);
    const configured = options !== undefined && Object.hasOwn(options, "instanceTimeout");
    const timeout = configured ? checkMs("options.instanceTimeout", options.instanceTimeout) : this.#timeout;
    return { name, key: keysOf(this.#prefix, [name])[0] as string, timeout };
  }

  /**
   * Checks the instances as for a vote: one server listed twice rejects with its
   * `LockConfigurationError`, since its key would count twice toward the quorum; a replica's
   * role is read, so that its copy of its master's key is not counted (`withoutReplicas`).
   */
  #checked(timeout: number): Promise<unknown> | undefined {
    const identity = this.#identity;
    return identity.current ? undefined : identity.voters(this.#stores, timeout);
  }

  #describe(instance: number): string {
    return this.#stores[instance]?.description ?? `instance ${instance}`;
  }

  #summarize(resource: string, key: string, votes: readonly Vote<StoredKey | null>[]): LockInspection {
    let free = 0;
    let unknown = 0;
    /** The ttls of each holder's keys, by fingerprint. */
    const holders = new Map<string, number[]>();
    const instances = votes.map((vote, instance): InstanceInspection => {
      const description = this.#describe(instance);
      if (!vote.ok) {
        unknown++;
        return { instance, description, state: "unknown", error: plainError(vote.error) };
      }
      if (vote.value === null) {
        free++;
        return { instance, description, state: "free" };
      }
      const { value, ttlMs } = vote.value;
      const holder = fingerprint(value);
      const ttls = holders.get(holder) ?? [];
      ttls.push(ttlMs);
      holders.set(holder, ttls);
      return { instance, description, state: "held", ttlMs, holder, ours: this.#live.holds(value) };
    });
    let holder: string | undefined;
    let ttls: number[] = [];
    for (const [candidate, candidateTtls] of holders) {
      if (candidateTtls.length > ttls.length) [holder, ttls] = [candidate, candidateTtls];
    }
    const quorum = this.#quorum;
    // Free only if no holder could reach a quorum even if every silent instance held its key.
    const state: QuorumState = ttls.length >= quorum ? "held" : ttls.length + unknown < quorum ? "free" : "unknown";
    const ours = instances.some((view) => view.holder === holder && view.ours === true);
    const inspection: LockInspection = {
      resource,
      key,
      state,
      quorum,
      held: votes.length - free - unknown,
      free,
      unknown,
      ...(holder === undefined ? {} : { holder }),
      ours,
      ...(state === "held" ? { ttlMs: quorumTtl(ttls, quorum) } : {}),
      instances,
    };
    return inspection;
  }
}

/** The quorum-th longest ttl: how long a quorum of the holder's keys remains. -1 (no expiry) is the longest. */
function quorumTtl(ttls: readonly number[], quorum: number): number {
  const longestFirst = ttls.map((ttl) => (ttl < 0 ? Number.POSITIVE_INFINITY : ttl)).sort((a, b) => b - a);
  const ttl = longestFirst[quorum - 1] ?? 0;
  return ttl === Number.POSITIVE_INFINITY ? -1 : ttl;
}

/** Identifies a holder across instances without revealing its value (which would let anyone release or extend it). */
export function fingerprint(value: string): string {
  return createHash("sha256").update(value).digest("hex").slice(0, 8);
}

/** A fresh Error with the name and message only: ioredis errors carry the command and its arguments. */
function plainError(error: unknown): Error {
  const source = error instanceof Error ? error : new Error(String(error));
  const plain = new Error(source.message);
  plain.name = source.name;
  return plain;
}
