import type { Cluster, Redis } from "ioredis";

/** Channel on which the release script announces that `key` was freed. */
export const releaseChannel = (key: string): string => `redlock-kit:released:${key}`;

/** One warning per process is enough to tell an operator; more would be noise. */
let warned = false;

interface Channel {
  readonly listeners: Set<(notice: string) => void>;
  /** Settles when SUBSCRIBE was answered; rejects when it failed. */
  readonly ready: Promise<unknown>;
}

/**
 * One lazily created subscriber connection per instance, multiplexed across resources:
 * a channel is subscribed while at least one waiter listens to it, and the connection is
 * open only while some channel is.
 */
export class ReleaseSubscriber {
  readonly #client: Redis | Cluster;
  readonly #channels = new Map<string, Channel>();
  #connection: Redis | Cluster | undefined;
  /** Set when the instance refused SUBSCRIBE for good (an ACL without pub/sub): waiters poll. */
  #refused = false;

  constructor(client: Redis | Cluster) {
    this.#client = client;
  }

  /** Calls `listener` whenever `key` is released on this instance. Resolves once subscribed; returns unsubscribe. */
  async listen(key: string, listener: (notice: string) => void): Promise<() => void> {
    if (this.#refused) throw new Error("release notifications are not permitted on this instance");
    const name = releaseChannel(key);
    let channel = this.#channels.get(name);
    if (channel === undefined) {
      const ready = this.#connect().subscribe(name);
      channel = { listeners: new Set(), ready };
      this.#channels.set(name, channel);
      ready.catch((error: unknown) => this.#failed(name, error));
    }
    const joined = channel;
    joined.listeners.add(listener);
    const leave = () => {
      joined.listeners.delete(listener);
      if (joined.listeners.size === 0 && this.#channels.get(name) === joined) {
        this.#channels.delete(name);
        // No waiter left: close the connection rather than keep a socket that holds the process open
        // for users who quit their own clients but never call Redlock.quit().
        if (this.#channels.size === 0) this.close();
        else this.#connection?.unsubscribe(name).catch(() => {});
      }
    };
    try {
      await joined.ready;
    } catch (error) {
      leave();
      throw error;
    }
    return leave;
  }

  /** How many listeners wait for `key` here: Redis counts our connection once, however many there are. */
  listenersOf(key: string): number {
    return this.#channels.get(releaseChannel(key))?.listeners.size ?? 0;
  }

  /** How many channels are subscribed now (for tests and leak checks). */
  get channelCount(): number {
    return this.#channels.size;
  }

  close(): void {
    this.#channels.clear();
    this.#connection?.disconnect();
    this.#connection = undefined;
  }

  #connect(): Redis | Cluster {
    if (this.#connection === undefined) {
      // Redis and Cluster both take no arguments to copy their own options
      const connection = (this.#client as { duplicate(): Redis | Cluster }).duplicate();
      connection.on("error", () => {});
      connection.on("message", (channel: string, notice: string) => {
        for (const listener of this.#channels.get(channel)?.listeners ?? []) listener(notice);
      });
      this.#connection = connection;
    }
    return this.#connection;
  }

  #failed(name: string, error: unknown): void {
    this.#channels.delete(name);
    if (!this.#refused && error instanceof Error && error.message.startsWith("NOPERM")) {
      this.#refused = true;
      if (warned) return;
      warned = true;
      process.emitWarning(
        "redlock-kit: this Redis user may not SUBSCRIBE; waiters for a held lock fall back to polling",
        { code: "REDLOCK_KIT_NO_PUBSUB" },
      );
    }
  }
}
