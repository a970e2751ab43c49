import { Redlock } from "@redlock-kit/core";
import { Redis } from "ioredis";

/** The instances of one run: a Redlock over clients this CLI owns and closes. */
export interface Instances {
  readonly dlm: Redlock;
  readonly clients: readonly Redis[];
  /** host:port/db of each instance, never a password. */
  readonly names: readonly string[];
  close(): void;
}

/**
 * One client per URL. A one-shot command gives up on an instance that refuses the connection at
 * once (no reconnection: its commands fail instead of waiting for the timeout); `watch` keeps
 * reconnecting, so an instance that comes back shows up again.
 */
export function connect(urls: readonly string[], prefix: string, timeout: number, reconnect: boolean): Instances {
  const clients = urls.map((url) => {
    const client = new Redis(url, {
      connectTimeout: timeout,
      maxRetriesPerRequest: 1,
      retryStrategy: reconnect ? (times) => Math.min(times * 200, 2000) : () => null,
    });
    // Failures reach the output as "unknown" instances; ioredis would also print each one.
    client.on("error", (error: Error & { command?: { name?: string } }) => {
      // the server refused the URL's database (out of range): ioredis would go on in db 0, where a
      // release would delete another database's key; closed here, the instance answers nothing
      if (error.command?.name === "select") client.disconnect();
    });
    return client;
  });
  const close = () => {
    for (const client of clients) {
      client.disconnect();
      // disconnect() half-closes; a stopped server never answers the FIN, and the socket would keep us alive
      client.stream?.destroy();
    }
  };
  try {
    const dlm = new Redlock(clients, { keyPrefix: prefix, instanceTimeout: timeout });
    return { dlm, clients, names: dlm.stores.map((store, index) => store.description ?? `#${index + 1}`), close };
  } catch (error) {
    close();
    throw error;
  }
}
