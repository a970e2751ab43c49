import { type OpenSubscriber, runIdOf } from "../../waiting/hand-over-subscriber.js";
import { type NodeRedisBase, type NodeRedisKind, senderOf } from "./client-shape.js";

/**
 * The hand-over subscriber connection of a node-redis client, Cluster or Sentinel: a `duplicate()`
 * of it, connected with the first SUBSCRIBE (the client the user gave is never put in subscriber
 * mode), destroyed by `close()`. Its sockets are unref'd so that it never holds the process open by
 * itself: a waiter's own timer does that while it waits.
 */
export function nodeRedisSubscriber(client: NodeRedisBase, kind: NodeRedisKind): OpenSubscriber {
  return (onMessage) => {
    const connection = client.duplicate();
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
          if (at === dropped) server = runIdOf(String(info));
        },
        () => {},
      );
    };
    let connected: Promise<unknown> | undefined;
    return {
      async subscribe(channel) {
        connected ??= connection.connect().then(kind === "client" ? ask : undefined);
        await connected;
        await connection.SUBSCRIBE(channel, (message) => onMessage(channel, message, server));
        // a Cluster opens its subscriber connection with the first SUBSCRIBE
        unrefSockets(connection);
      },
      unsubscribe: (channel) => connection.UNSUBSCRIBE(channel),
      close() {
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
