/** Replies to INFO that say nothing of the server's permissions: it is asked again, not taken as refusing. */
export const PASSING = /^(BUSY|LOADING|MASTERDOWN|TRYAGAIN)\b/;

/** A field of the text `INFO` answers (`run_id`, `redis_mode`, `role`), trimmed; undefined when absent or empty. */
export function infoField(info: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim() || undefined;
}

/** ioredis's `info`, or the view of a node-redis client (stores/node-redis/watched-client.ts). */
interface InfoClient {
  info(...sections: string[]): Promise<string>;
}

/** Clients whose server takes one INFO section at a time (Redis < 7): asked for the default sections. */
const oneSection = new WeakSet<InfoClient>();

/**
 * `INFO server replication`: who the server is and its role, in one round trip. A server that
 * refuses it is asked for its default sections, which hold both, from then on: Redis < 7 takes one
 * section only (ERR syntax error), and an ACL may allow INFO with some arguments only (NOPERM; a
 * user without `+info` is then refused that too). An answer that passes is not asked again here.
 */
export async function serverInfo(client: InfoClient): Promise<string> {
  if (oneSection.has(client)) return client.info("default");
  try {
    return await client.info("server", "replication");
  } catch (error) {
    const { name, message } = error as Error;
    if (name !== "ReplyError" || PASSING.test(message)) throw error;
    oneSection.add(client);
    return client.info("default");
  }
}

/**
 * For a replica (`role:slave`), its master as `host:port`; undefined for a master, and for an
 * answer without the replication section (a Sentinel's).
 */
export function masterOf(info: string): string | undefined {
  if (infoField(info, "role") !== "slave") return undefined;
  const host = infoField(info, "master_host");
  const port = infoField(info, "master_port");
  return host && port ? `${host}:${port}` : "a master it does not name";
}
