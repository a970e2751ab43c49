import {
  type ForcedRelease,
  type ForceReleaseOptions,
  type LockInspection,
  MemoryStore,
  Redlock,
} from "@redlock-kit/core";
import { Cluster, Redis } from "ioredis";
import { UsageError } from "./args.js";
import { bounded } from "./bounded.js";
import { noVoteStore, type Role, roleOf } from "./replica.js";

/** The instances of one run: a Redlock over clients this CLI owns and closes. */
export interface Instances {
  /** Built anew when `rereadRoles()` finds a role changed: read it at each use. */
  readonly dlm: Redlock;
  /** One per URL: a plain client, or a Cluster (one instance) when the URL's server runs in cluster mode. */
  readonly clients: readonly (Redis | Cluster)[];
  /**
   * Per instance, why it is not asked (no vote, not scanned): its server said it is a replica
   * (`roleOf`), or did not answer CLUSTER SLOTS in time (see open()); else undefined.
   */
  readonly notAsked: readonly (string | undefined)[];
  /** host:port/db of each instance (cluster@host:port of its URL for a Cluster), never a password. */
  readonly names: readonly string[];
  /**
   * What to show for an instance whose command failed with `message`: the last error ioredis
   * reported on its connection when it has not been ready since (a wrong password, a refused
   * connection, a TLS or DNS failure), else `message`. ioredis fails the commands themselves with
   * a bare "Connection is closed.", the same for every cause.
   */
  reason(instance: number, message: string): string;
  /** `dlm.inspect()` and `dlm.forceRelease()`, each instance described by its name and failures by their reason. */
  inspect(resource: string): Promise<LockInspection>;
  forceRelease(resource: string, options?: ForceReleaseOptions): Promise<ForcedRelease>;
  /**
   * Asks each connected plain server its role again (`watch`, before each refresh): a master
   * demoted since (a failover) is no vote from then on, a replica promoted votes. Core reads a
   * role once per connection, and a failover keeps the connections; a demoted master answers
   * reads as before (only writes meet READONLY), so no answer of `watch`'s would tell. A server
   * that does not answer (or is not connected) keeps the role it had.
   */
  rereadRoles(): Promise<void>;
  close(): void;
}

/**
 * Core's own checks of `prefix` and of `resource` under it (empty, over 1024 characters, a lone
 * surrogate, a reserved suffix), as a `UsageError`, before any connection: the same TypeError or
 * RangeError from a command could as well be a bug's.
 */
export async function checkTarget(prefix: string, resource: string | undefined): Promise<void> {
  let dlm: Redlock | undefined;
  try {
    dlm = new Redlock([new MemoryStore()], { keyPrefix: prefix });
    if (resource !== undefined) await dlm.inspect(resource);
  } catch (error) {
    throw new UsageError((error as Error).message);
  } finally {
    await dlm?.quit();
  }
}

/**
 * One client per URL. A one-shot command gives up on a server that refuses the connection at once
 * (no reconnection: its commands fail instead of waiting for the timeout); `watch` keeps
 * reconnecting, so an instance that comes back shows up again. A Cluster always reconnects (see open()).
 */
export async function connect(
  urls: readonly string[],
  prefix: string,
  timeout: number,
  reconnect: boolean,
): Promise<Instances> {
  const opened = await openAll(urls, timeout, reconnect);
  const clients = opened.map(({ client }) => client);
  const close = () => closeClients(clients);
  try {
    const notAsked = (instance: number) => {
      const entry = opened[instance];
      return entry?.silent ?? entry?.role?.replica;
    };
    // each instance not asked is, to core, a store that refuses every call: no vote
    const build = () =>
      new Redlock(
        opened.map(({ client, plain }, index) => {
          const why = notAsked(index);
          return why === undefined || plain === undefined ? client : noVoteStore(plain, why);
        }),
        { keyPrefix: prefix, instanceTimeout: timeout },
      );
    let dlm: Redlock;
    try {
      dlm = build();
    } catch (error) {
      // the clients are the URLs': a list core refuses (one database named twice) is the command line's
      throw error instanceof TypeError ? new UsageError(error.message) : error;
    }
    const names = opened.map(({ name }, index) => name ?? dlm.stores[index]?.description ?? `#${index + 1}`);
    // the reason of an instance not asked stands, whatever its unused connection does
    const reason = (instance: number, message: string) =>
      notAsked(instance) ?? opened[instance]?.lastError() ?? message;
    // core describes every Cluster as "cluster": the output names it as the listing does
    const named = <R extends { readonly instances: readonly { readonly instance: number; readonly error?: Error }[] }>(
      result: R,
    ): R => ({
      ...result,
      instances: result.instances.map(({ instance, error, ...entry }) => ({
        ...entry,
        instance,
        description: names[instance],
        ...(error === undefined ? {} : { error: new Error(reason(instance, error.message), { cause: error }) }),
      })),
    });
    const rereadRoles = async () => {
      const roles = await Promise.all(
        opened.map(({ plain, silent }) =>
          plain === undefined || silent !== undefined || plain.status !== "ready" ? undefined : roleOf(plain, timeout),
        ),
      );
      let changed = false;
      for (const [index, role] of roles.entries()) {
        const entry = opened[index];
        if (entry === undefined || role === undefined) continue;
        changed ||= role.replica !== entry.role?.replica;
        entry.role = role;
      }
      if (!changed) return;
      // the same clients: core keeps what each connection said of itself (its run_id) while a
      // Redlock on them is open, so the new one is built before the old one quits; quit() leaves
      // the clients open and takes the old one's listeners off them (none gather, flip after flip)
      const replaced = dlm;
      dlm = build();
      await replaced.quit();
    };
    return {
      get dlm() {
        return dlm;
      },
      clients,
      get notAsked() {
        return opened.map((_, index) => notAsked(index));
      },
      names,
      reason,
      inspect: async (resource) => named(await dlm.inspect(resource)),
      forceRelease: async (resource, options) => named(await dlm.forceRelease(resource, options)),
      rereadRoles,
      close,
    };
  } catch (error) {
    close();
    throw error;
  }
}

type Opened = Awaited<ReturnType<typeof open>>;

/**
 * A client for each URL, or a `UsageError` naming the first URL that ioredis refuses (a port out of
 * range, a bad % escape in the password), once the others' clients, already connecting, are closed:
 * left open, they would keep the process alive after the message.
 */
async function openAll(urls: readonly string[], timeout: number, reconnect: boolean): Promise<Opened[]> {
  const settled = await Promise.allSettled(urls.map((url) => open(url, timeout, reconnect)));
  const refused = settled.findIndex((result) => result.status === "rejected");
  if (refused === -1) return settled.map((result) => (result as PromiseFulfilledResult<Opened>).value);
  closeClients(settled.flatMap((result) => (result.status === "fulfilled" ? [result.value.client] : [])));
  const { reason } = settled[refused] as PromiseRejectedResult;
  throw new UsageError(`entry ${refused + 1} of the Redis URLs cannot be used: ${(reason as Error).message}`);
}

function closeClients(clients: readonly (Redis | Cluster)[]): void {
  for (const client of clients) {
    const sockets = client instanceof Cluster ? client.nodes() : [client];
    client.disconnect();
    // disconnect() half-closes; a stopped server never answers the FIN, and the socket would keep us alive
    for (const socket of sockets) socket.stream?.destroy();
  }
}

/**
 * A plain client for `url`, or a Cluster seeded by it when its server answers CLUSTER SLOTS, which
 * only a server in cluster mode does: a plain client there would see one master's keys, and get
 * MOVED for the others'. CLUSTER SLOTS is what an ioredis Cluster needs anyway, and is asked even
 * of an ACL user without INFO. Only an error answer (cluster support disabled, or NOPERM for a user
 * without it) or a failed connection (whose reads then fail with its reason) makes it plain: a
 * server that does not answer within `timeout`, a Cluster node as well as any, did not answer, and
 * is not asked (a node taken for plain would be refused as a Cluster node once it answers).
 * A plain server is asked its role at the same time (`roleOf`): a replica is not asked.
 */
async function open(
  url: string,
  timeout: number,
  reconnect: boolean,
): Promise<{
  client: Redis | Cluster;
  name?: string;
  /** A plain server's client, whose role is read (`roleOf`); undefined for a Cluster. */
  plain?: Redis;
  /** Its role as last read; undefined while unknown (it is then asked as a master). */
  role?: Role;
  /** Why it is never asked: it did not answer CLUSTER SLOTS in time. */
  silent?: string;
  lastError: () => string | undefined;
}> {
  const client = new Redis(url, {
    connectTimeout: timeout,
    maxRetriesPerRequest: 1,
    retryStrategy: reconnect ? backOff : () => null,
    disconnectTimeout: DISCONNECT_TIMEOUT,
  });
  // Failures reach the output as "unknown" instances, with this as their reason; ioredis would
  // also print each one.
  const lastError = keepLastError(client, client.options.password, client.options.tls !== undefined);
  client.on("error", (error: Error & { command?: { name?: string } }) => {
    // the server refused the URL's database (out of range, or any but 0 in cluster mode): ioredis
    // would go on in db 0, where a release would delete another database's key; closed here, the
    // instance answers nothing
    if (error.command?.name === "select") client.disconnect();
  });
  const [mode, role] = await Promise.all([clusterMode(client, timeout), roleOf(client, timeout)]);
  if (typeof mode === "object") return { client, plain: client, silent: mode.silent, lastError };
  if (mode === "plain") return { client, plain: client, ...(role === undefined ? {} : { role }), lastError };
  client.disconnect();
  // every master gets the URL's credentials and TLS, not only the seed
  const { host, port, username, password, tls } = client.options;
  const cluster = new Cluster([{ host, port }], {
    redisOptions: {
      username,
      password,
      tls,
      connectTimeout: timeout,
      maxRetriesPerRequest: 1,
      disconnectTimeout: DISCONNECT_TIMEOUT,
    },
    // ioredis's ready check asks CLUSTER INFO of any node: a stopped master would fail it for the
    // whole Cluster. Without it the Cluster is ready once the seed listed the slots (the keys of a
    // failed Cluster are then answered CLUSTERDOWN, shown as unknown).
    enableReadyCheck: false,
    // never ended, even for a one-shot command: a command to an ended Cluster waits for a "ready"
    // that never comes, and core's bound on each answer holds no process open (Node would exit)
    clusterRetryStrategy: backOff,
  });
  const clusterError = keepLastError(cluster, password, tls !== undefined);
  // its masters are known once it is ready; one that is not by then is scanned as unavailable
  await bounded(new Promise((ready) => cluster.once("ready", ready)), timeout).catch(() => {});
  return { client: cluster, name: `cluster@${host}:${port}`, lastError: clusterError };
}

/**
 * "cluster" when `client`'s server answers CLUSTER SLOTS; "plain" when it answers with an error, or
 * it cannot be reached (its reads then fail with the connection's reason); `silent` (why) when it
 * is connected and does not answer within `timeout`. A connection not made by then is given another
 * `timeout`: its own connect timeout (the same, armed first) fails it, or it was made late (a busy
 * event loop can run the expired timer before the socket's connect event) and the server may answer.
 */
async function clusterMode(client: Redis, timeout: number): Promise<"cluster" | "plain" | { silent: string }> {
  const answer = client.cluster("SLOTS").then(
    () => "cluster" as const,
    () => "plain" as const,
  );
  const connected = () => client.status === "connect" || client.status === "ready";
  const late = (error: Error) => (connected() ? { silent: error.message } : ("plain" as const));
  return bounded(answer, timeout).catch((error: Error) =>
    connected() ? late(error) : bounded(answer, timeout).catch(late),
  );
}

/**
 * The last error `client` reported, until it is ready again, with a hint where one helps; never
 * with the password in it.
 */
function keepLastError(client: Redis | Cluster, password: string | undefined, tls: boolean): () => string | undefined {
  let last: string | undefined;
  client.on("error", (error: Error & { code?: string }) => {
    last = redact(error.message.trim(), password) + hint(error.code, tls);
  });
  client.on("ready", () => {
    last = undefined;
  });
  return () => last;
}

/**
 * How to go on from a TLS failure: ioredis takes no CA from a URL, and Node's message names no way
 * to trust a private one; a rediss:// URL to a server without TLS on that port gets no answer to
 * its TLS hello, and times out like an unreachable server.
 */
function hint(code: string | undefined, tls: boolean): string {
  if (code !== undefined && UNTRUSTED.has(code))
    return " (trust the server's CA with NODE_EXTRA_CA_CERTS=/path/to/ca.pem)";
  // tls: a rediss:// URL, or ?tls= in a redis:// one
  if (tls && code === "ETIMEDOUT") return " (TLS: does the server take TLS on this port?)";
  return "";
}

/** Node's codes for a certificate chain it cannot verify up to a CA it trusts. */
const UNTRUSTED = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
]);

/**
 * `message` without `password` (a server that does not know AUTH echoes it: "unknown command
 * 'auth', with args beginning with: 'secret'") or a URL's `user:password@`.
 */
function redact(message: string, password: string | undefined): string {
  const hidden = password ? message.replaceAll(password, "***") : message;
  return hidden.replace(/\b([a-z][a-z\d+.-]*:\/\/)[^\s/@]*@/gi, "$1");
}

const backOff = (times: number) => Math.min(times * 200, 2000);

/**
 * ioredis's disconnect() arms this timer (2 s by default, not unref'd) on the last socket, cleared
 * only by that socket's 'close': a connection that failed (refused, a wrong password) has closed
 * already, and the timer held the process for 2 s after its result. closeClients() destroys the
 * sockets anyway.
 */
const DISCONNECT_TIMEOUT = 0;
