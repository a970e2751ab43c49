import { infoField } from "../../quorum/server-info.js";
import type { OpenSubscriber } from "../../waiting/hand-over-subscriber.js";
import { type NodeRedisBase, type NodeRedisKind, type ReconnectStrategy, senderOf } from "./client-shape.js";

/**
 * The hand-over subscriber connection of a node-redis client, Cluster or Sentinel: a `duplicate()`
 * of it, connected with the first SUBSCRIBE (the client the user gave is never put in subscriber
 * mode), destroyed by `close()`. Its sockets are unref'd so that it never holds the process open by
 * itself: a waiter's own timer does that while it waits.
 */
export function nodeRedisSubscriber(client: NodeRedisBase, kind: NodeRedisKind): OpenSubscriber {
  return (onMessage) => {
    const retrying = retryingDuplicate(client);
    const connection = retrying.connection;
    // node-redis throws an 'error' event nobody listens to; a lost subscription makes waiters poll
    connection.on("error", () => {});
    /**
     * The run_id of the server this connection reaches (hand-over-subscriber.ts, `OpenSubscriber`):
     * asked once, before the first SUBSCRIBE, on a standalone client only. node-redis subscribes
     * again by itself after a reconnect, leaving no moment to ask, so a reconnect forgets it for
     * good (hand-overs heard there are claimed); a Sentinel's INFO would not go to this connection.
     */
    let server: string | undefined;
    let dropped = 0;
    for (const event of ["error", "reconnecting", "end"]) {
      connection.on(event, () => {
        dropped++;
        server = undefined;
      });
    }
    const ask = () => {
      const at = dropped;
      return senderOf(connection, "client")(undefined, ["INFO", "server"]).then(
        (info) => {
          if (at === dropped) server = infoField(String(info), "run_id");
        },
        () => {},
      );
    };
    let connected: Promise<unknown> | undefined;
    return {
      async subscribe(channel) {
        connected ??= retrying.connect().then(kind === "client" ? ask : undefined);
        await connected;
        await connection.SUBSCRIBE(channel, (message) => onMessage(channel, message, server));
        // a Cluster opens its subscriber connection with the first SUBSCRIBE
        unrefSockets(connection);
      },
      unsubscribe: (channel) => connection.UNSUBSCRIBE(channel),
      close() {
        retrying.stop();
        // destroy() of a closed client throws ClientClosedError (@redis/client 5.x and 6.0)
        const destroy = () => {
          if (connection.isOpen) connection.destroy();
        };
        destroy();
        // a TCP connect under way when destroy() ran can still complete: close that socket too
        connected?.then(destroy, destroy).catch(() => {});
      },
    };
  };
}

/**
 * node-redis waits between connection attempts on a timer of its own, which keeps the process
 * alive: a subscriber whose instance is down would hold a process whose work is done until
 * `quit()`. So a standalone client's duplicate gives up each failed first connect at once, and is
 * connected again after the delay the client's own strategy asks for, on an unref'd timer. Once
 * connected it reconnects as the client does (its subscription is then closed with its last
 * listener). A Sentinel's duplicate connects as the Sentinel does.
 */
function retryingDuplicate(client: NodeRedisBase): {
  readonly connection: NodeRedisBase;
  connect(): Promise<unknown>;
  stop(): void;
} {
  const socket = client.options?.socket ?? {};
  if (typeof client.unref !== "function") {
    const connection = client.duplicate();
    return { connection, connect: () => connection.connect(), stop: () => {} };
  }
  // node-redis's default: none after a socket timeout, else exponential back-off to 2 s plus jitter
  const byDefault: ReconnectStrategy = (retries, cause) =>
    cause?.constructor.name === "SocketTimeoutError"
      ? false
      : Math.min(2 ** retries * 50, 2000) + Math.floor(Math.random() * 200);
  const own = socket.reconnectStrategy;
  // as node-redis does, a strategy that throws gets the default
  const strategy: ReconnectStrategy =
    typeof own === "function"
      ? (retries, cause) => {
          try {
            return own(retries, cause);
          } catch {
            return byDefault(retries, cause);
          }
        }
      : own === false || typeof own === "number"
        ? () => own
        : byDefault;
  let ready = false;
  let retries = 0;
  let wanted: number | false | Error = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const connection = client.duplicate({
    socket: {
      ...socket,
      reconnectStrategy: (after: number, cause: Error) => {
        if (ready) return strategy(after, cause);
        wanted = strategy(retries++, cause);
        return new Error("redlock-kit retries a subscriber's first connect itself");
      },
    },
  });
  connection.once("ready", () => {
    ready = true;
  });
  return {
    connection,
    async connect() {
      for (;;) {
        wanted = false;
        try {
          return await connection.connect();
        } catch (error) {
          if (stopped || typeof wanted !== "number") throw error;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, wanted as number);
          timer.unref();
        });
        if (stopped) throw new Error("The subscriber connection was closed");
      }
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
      wake?.();
    },
  };
}

/** A standalone client has `unref()`; a Cluster's node clients each have one (a Sentinel has none). */
function unrefSockets(connection: NodeRedisBase): void {
  if (typeof connection.unref === "function") {
    connection.unref();
    return;
  }
  const cluster = connection as unknown as {
    masters?: readonly { client?: NodeRedisBase; pubSub?: { client?: NodeRedisBase } }[];
    pubSubNode?: { client?: NodeRedisBase };
  };
  for (const node of cluster.masters ?? []) {
    node.client?.unref?.();
    node.pubSub?.client?.unref?.();
  }
  cluster.pubSubNode?.client?.unref?.();
}
