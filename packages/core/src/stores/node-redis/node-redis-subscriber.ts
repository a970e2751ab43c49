import { infoField } from "../../quorum/server-info.js";
import { handOverChannel, type OpenSubscriber } from "../../waiting/hand-over-subscriber.js";
import { type NodeRedisBase, type NodeRedisKind, type ReconnectStrategy, senderOf } from "./client-shape.js";

/**
 * The hand-over subscriber connection of a node-redis client, Cluster or Sentinel: a `duplicate()`
 * of it, connected with the first SUBSCRIBE (the client the user gave is never put in subscriber
 * mode), destroyed by `close()`. Its sockets are unref'd so that it never holds the process open by
 * itself: a waiter's own timer does that while it waits.
 */
export function nodeRedisSubscriber(client: NodeRedisBase, kind: NodeRedisKind): OpenSubscriber {
  return (onMessage, onSubscribedAgain) => {
    /** The connection's latest opening: the first, or the one after it was lost. */
    let connected: Promise<unknown> | undefined;
    const retrying = retryingDuplicate(client, (reconnected) => {
      connected = reconnected;
      // node-redis's connect() resolves once the SUBSCRIBEs it sends again were answered; a close()
      // ends it, and a SUBSCRIBE waiting for it hears that
      reconnected.then(onSubscribedAgain, () => {});
    });
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
    let closed = false;
    /** Channels subscribed or being subscribed (a Sentinel's probe needs a pub/sub connection open). */
    const channels = new Set<string>();
    if (kind === "sentinel") {
      sentinelSubscribedAgain(
        connection,
        () => closed,
        () => channels.size > 0,
        onSubscribedAgain,
      );
    }
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
    return {
      async subscribe(channel) {
        connected ??= retrying.connect().then(kind === "client" ? ask : undefined);
        // lost while it opened (INFO unanswered): the SUBSCRIBE goes on the connection opened next
        let opening: Promise<unknown>;
        do {
          opening = connected;
          await opening;
        } while (opening !== connected);
        // a Sentinel's connect() under way when close() destroyed it resolves, and its SUBSCRIBE
        // would open a new pub/sub connection that nobody closes
        if (closed) throw new Error("The subscriber connection was closed");
        channels.add(channel);
        await connection.SUBSCRIBE(channel, (message) => onMessage(channel, message, server));
        // a Cluster opens its subscriber connection with the first SUBSCRIBE
        unrefSockets(connection);
      },
      unsubscribe: (channel) => {
        channels.delete(channel);
        return connection.UNSUBSCRIBE(channel);
      },
      close() {
        closed = true;
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
 * Subscribed to for a moment to learn when a Sentinel's pub/sub connection has subscribed again. In
 * the hand-over channels, which a least-privilege user may use (README: `&redlock-kit:hand-over:*`);
 * no Redlock's channel (base64url) has a ':'.
 */
const PROBE_CHANNEL = handOverChannel("probe:subscribed-again");

/**
 * A node-redis Sentinel subscribes again by itself and says so only after a new master: it is
 * `ready` again once its pub/sub connection moved there and subscribed again. That connection lost
 * and opened again on the same master (CLIENT KILL, a network reset) shows only as an `error`: a
 * SUBSCRIBE sent then waits in its queue behind the SUBSCRIBEs node-redis sends again first, so its
 * answer says the channels are back (after an `error` of another cause: one attempt per waiter, as
 * a poll). Either way a release meanwhile reached nobody. A probe lost with a connection lost again
 * before it was answered (a flapping network) is sent again. A probe is sent only while channels are
 * subscribed (it must not open a pub/sub connection), and never after `close()`; it is left again
 * even when the last channel went meanwhile (it would keep that connection subscribed).
 */
function sentinelSubscribedAgain(
  connection: NodeRedisBase,
  closed: () => boolean,
  subscribed: () => boolean,
  subscribedAgain: () => void,
) {
  const listening = () => !closed() && subscribed();
  let readyBefore = false;
  connection.on("ready", () => {
    if (readyBefore && listening()) subscribedAgain();
    readyBefore = true;
  });
  let probing = false;
  /** An `error` heard while a probe was out, whose loss may have taken that probe unanswered. */
  let lostWhileProbing = false;
  const probe = () => {
    probing = true;
    lostWhileProbing = false;
    connection
      .SUBSCRIBE(PROBE_CHANNEL, () => {})
      .then(
        () => {
          probing = false;
          if (closed()) return;
          if (subscribed()) subscribedAgain();
          connection.UNSUBSCRIBE(PROBE_CHANNEL).catch(() => {});
        },
        () => {
          probing = false;
          // lost with a connection: the channels come back on the next one, and another probe says when
          if (lostWhileProbing && listening()) probe();
        },
      );
  };
  connection.on("error", (error: unknown) => {
    // a sentinel's own connection failing (node-redis wraps those) leaves the channels as they were
    if (!listening() || !(error instanceof Error) || error.message.startsWith("Sentinel Client")) return;
    if (probing) lostWhileProbing = true;
    else probe();
  });
}

/**
 * node-redis waits between connection attempts on a timer of its own, which keeps the process
 * alive and which neither `destroy()` nor `close()` clears: a subscriber whose instance is down
 * would hold a process whose work is done until `quit()`, and one between two reconnect attempts
 * would hold it after `quit()` for as long as the strategy asked. So a standalone client's
 * duplicate never lets node-redis wait: each failed attempt, and a lost connection, end the
 * duplicate, which is connected again after the delay the client's own strategy asks for, on an
 * unref'd timer (at once after a lost connection, as node-redis does). node-redis keeps the
 * channels' listeners when a connection ends and subscribes to them again on the next `connect()`.
 * `lost` is given the opening that follows a lost connection (rejected when the strategy gives
 * up). A Sentinel's duplicate connects as the Sentinel does.
 */
function retryingDuplicate(
  client: NodeRedisBase,
  lost: (reconnected: Promise<unknown>) => void,
): {
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
  const connect = async () => {
    for (;;) {
      if (stopped) throw new Error("The subscriber connection was closed");
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
    }
  };
  const connection = client.duplicate({
    socket: {
      ...socket,
      reconnectStrategy: (_: number, cause: Error) => {
        wanted = strategy(retries++, cause);
        if (ready) {
          // lost: node-redis ends it once this returns; it is opened again at once, as node-redis
          // would, unless the strategy gives up (a SUBSCRIBE would then wait for nothing)
          ready = false;
          lost(typeof wanted === "number" ? Promise.resolve().then(connect) : Promise.reject(cause));
        }
        return new Error("redlock-kit retries a subscriber's connection itself");
      },
    },
  });
  connection.on("ready", () => {
    ready = true;
    retries = 0;
  });
  return {
    connection,
    connect,
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
