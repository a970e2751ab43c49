import type { LockStore } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { bounded } from "./bounded.js";

/** What a server said of its role: for a replica (INFO replication's `role:slave`), why it is no instance. */
export interface Role {
  /** `replica of host:port (role:slave)`; undefined for a master. */
  readonly replica?: string;
}

/**
 * The role of the server behind `client`. A replica answers GET and PTTL with its master's copy,
 * possibly behind it, and refuses writes (READONLY): a lock's quorum is counted over masters.
 * Undefined where the role cannot be known (a user without `+info`, no answer within `timeout`).
 */
export async function roleOf(client: Redis, timeout: number): Promise<Role | undefined> {
  const info = await bounded(client.info("replication"), timeout).catch(() => undefined);
  if (info === undefined || field(info, "role") === undefined) return undefined;
  if (field(info, "role") !== "slave") return {};
  const host = field(info, "master_host");
  const port = field(info, "master_port");
  return {
    replica:
      host === undefined || port === undefined ? "replica (role:slave)" : `replica of ${host}:${port} (role:slave)`,
  };
}

const field = (info: string, name: string) => new RegExp(`^${name}:(.*?)\\r?$`, "m").exec(info)?.[1] || undefined;

/**
 * The instance of a server the CLI does not ask in its Redlock (a replica, or a server that did not
 * answer CLUSTER SLOTS in time): nothing is sent to it, and every call fails with `reason`
 * (`replicaOf`'s: the CLI shows it as refused), so that core counts it as no vote. It is named as
 * core names a client (host:port/db, or the socket's path).
 */
export function noVoteStore(client: Redis, reason: string): LockStore {
  const { path, host, port, db } = client.options;
  const refuse = () => Promise.reject(new Error(reason));
  return {
    description: `${path ?? `${host}:${port}`}/${db ?? 0}`,
    acquire: refuse,
    extend: refuse,
    release: refuse,
    inspect: refuse,
  };
}
