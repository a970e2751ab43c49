import type { Cluster, Redis } from "ioredis";
import { infoField } from "../quorum/server-info.js";
import { keepConnecting, letEnd } from "../stores/keep-connecting.js";

/** Where a release announces that it handed a key to a waiter of the Redlock named `channel`. */
export const handOverChannel = (channel: string): string => `redlock-kit:hand-over:${channel}`;

/** One warning per process is enough to tell an operator; more would be noise. */
let warned = false;

/** `server`: the run_id of the server the message came from, when its connection said (see `OpenSubscriber`). */
type Listener = (key: string, value: string, server: string | undefined) => void;

/** One channel's listener, what its first SUBSCRIBE answered, and whom to tell when it subscribed again after a lost connection. */
interface Listening {
  readonly listener: Listener;
  readonly ready: Promise<unknown>;
  readonly subscribedAgain: (() => void) | undefined;
}

/** A subscriber connection as `HandOverSubscriber` drives it, whatever the client library. */
export interface SubscriberConnection {
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  /** Closes the connection; it must not keep the process alive after this. */
  close(): void;
}

/**
 * Opens a subscriber connection (lazily, on the first `subscribe`) that calls `onMessage` for each
 * message, with `server`: the run_id the connection's server gave (INFO, before its SUBSCRIBEs) on
 * the connection the message came on, or undefined when it has not (yet) said. A reconnect may reach
 * another server than the instance's data connection (a failover, a DNS change): one message heard
 * there twice must not count as two instances' grants (speed/message-grant.ts). `onSubscribedAgain`
 * once the connection, lost and opened again, has subscribed again to its channels (Redis answered):
 * a hand-over while it was down reached nobody.
 */
export type OpenSubscriber = (
  onMessage: (channel: string, message: string, server: string | undefined) => void,
  onSubscribedAgain: () => void,
) => SubscriberConnection;

/**
 * The subscriber connection of one instance, created on first use and shared by the Redlocks on
 * it: each listens on its own hand-over channel, so one connection per instance serves every key
 * they wait for (no SUBSCRIBE per key or per waiter). The connection is closed once nobody
 * listens, and never holds the process open by itself.
 */
export class HandOverSubscriber {
  readonly #open: OpenSubscriber;
  readonly #listeners = new Map<string, Listening>();
  #connection: SubscriberConnection | undefined;

  constructor(open: OpenSubscriber) {
    this.#open = open;
  }

  /**
   * Calls `listener(key, value, server)` for each hand-over announced on `channel`, and
   * `subscribedAgain()` each time the connection subscribed again after it was lost (hand-overs
   * announced meanwhile were not heard). Resolves once subscribed; returns stop.
   */
  async listen(channel: string, listener: Listener, subscribedAgain?: () => void): Promise<() => void> {
    const name = handOverChannel(channel);
    // listening again before an earlier stop: the SUBSCRIBE already sent serves
    const ready = this.#listeners.get(name)?.ready ?? this.#connect().subscribe(name);
    const entry: Listening = { listener, ready, subscribedAgain };
    this.#listeners.set(name, entry);
    const stop = () => {
      if (this.#listeners.get(name) !== entry) return;
      this.#listeners.delete(name);
      if (this.#listeners.size === 0) this.close();
      else this.#connection?.unsubscribe(name).catch(() => {});
    };
    try {
      await ready;
    } catch (error) {
      // forget the channel only after leaving it: the connection must not outlive its last listener
      stop();
      warnIfRefused(error);
      throw error;
    }
    return stop;
  }

  /** How many channels are subscribed now (for tests and leak checks). */
  get channelCount(): number {
    return this.#listeners.size;
  }

  close(): void {
    this.#listeners.clear();
    this.#connection?.close();
    this.#connection = undefined;
  }

  #connect(): SubscriberConnection {
    this.#connection ??= this.#open(
      (name, message, server) => {
        const at = message.indexOf(":");
        if (at > 0) this.#listeners.get(name)?.listener(message.slice(at + 1), message.slice(0, at), server);
      },
      () => {
        for (const { subscribedAgain } of this.#listeners.values()) subscribedAgain?.();
      },
    );
    return this.#connection;
  }
}

/**
 * The subscriber connection of an ioredis client or Cluster: a `duplicate()` of it. A standalone
 * connection subscribes again itself after a reconnect, with ioredis's `autoResubscribe` off:
 * ioredis sends that SUBSCRIBE with nobody handling its promise, so a close before Redis answers
 * it (the last waiter leaving, `quit()`) crashes the process with an unhandled "Connection is
 * closed." A Cluster's subscriber handles the rejections of its own resubscribes.
 */
export function ioredisSubscriber(client: Redis | Cluster): OpenSubscriber {
  return (onMessage, onSubscribedAgain) => {
    const cluster = "isCluster" in client && client.isCluster;
    const connection = cluster
      ? (client as Cluster).duplicate()
      : // disconnectTimeout 0: ioredis's disconnect() arms a timer (2 s by default, not unref'd) on
        // the last socket, cleared only by that socket's 'close'; between two connection attempts
        // that socket has closed already, and the timer held a process whose work was done
        (client as Redis).duplicate({ autoResubscribe: false, disconnectTimeout: 0 });
    connection.on("error", () => {});
    if (!cluster) keepConnecting(connection as Redis);
    /** The run_id of the server this connection reaches, once it said; bumped `connections` drop a late answer. */
    let server: string | undefined;
    let connections = 0;
    connection.on("close", () => {
      connections++;
      server = undefined;
    });
    connection.on("connect", () => {
      // a waiter's own timer keeps the process alive while it waits; this socket must not
      (connection as Redis).stream?.unref?.();
      if (cluster) return;
      // Asked on each connection, before its SUBSCRIBEs (INFO is sent during the handshake; once
      // subscribed, Redis would refuse it): no round trip per hand-over. A refusal leaves it unknown.
      const at = connections;
      (connection as Redis).info("server").then(
        (info) => {
          if (at === connections) server = infoField(info, "run_id");
        },
        () => {},
      );
    });
    connection.on("message", (channel: string, message: string) => onMessage(channel, message, server));
    const channels = new Set<string>();
    let closed = false;
    let readyBefore = false;
    if (!cluster) {
      connection.on("ready", () => {
        // the first connection sends the SUBSCRIBEs queued while it connected; a later one starts empty
        if (readyBefore && !closed && channels.size > 0)
          connection.subscribe(...channels).then(onSubscribedAgain, () => {});
        readyBefore = true;
      });
    }
    return {
      subscribe: (channel) => {
        channels.add(channel);
        return connection.subscribe(channel);
      },
      unsubscribe: (channel) => {
        channels.delete(channel);
        return connection.unsubscribe(channel);
      },
      close: () => {
        closed = true;
        if (!cluster) letEnd(connection as Redis);
        connection.disconnect();
      },
    };
  };
}

/** A SUBSCRIBE refused for want of permission: asking again in the same cycle would be refused again. */
export const refusedForGood = (error: unknown): boolean => error instanceof Error && error.message.startsWith("NOPERM");

function warnIfRefused(error: unknown): void {
  if (warned || !refusedForGood(error)) return;
  warned = true;
  process.emitWarning(
    "redlock-kit: this Redis user may not SUBSCRIBE to redlock-kit:hand-over:*; waiters for a held lock fall back to polling",
    { code: "REDLOCK_KIT_NO_PUBSUB" },
  );
}
