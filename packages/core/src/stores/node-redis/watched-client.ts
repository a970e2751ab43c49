import { isServerError, type NodeRedisBase, type NodeRedisKind, type Send } from "./client-shape.js";

/**
 * A node-redis client seen through the few ioredis-like members that server-identity.ts watches
 * (`status`, `info`, `call` and the connection events), so that node-redis instances are checked
 * for being one server listed twice exactly as ioredis ones are.
 */
export interface WatchedNodeRedis {
  readonly status: string;
  readonly isCluster: boolean;
  info(...sections: string[]): Promise<string>;
  call(...args: string[]): Promise<unknown>;
  on(event: string, listener: () => void): unknown;
  off(event: string, listener: () => void): unknown;
}

/**
 * ioredis's event names and node-redis's: a standalone client or Sentinel says 'reconnecting' when
 * its connection dropped, 'end' when closed, and 'terminated' (@redis/client 6.x) when its
 * reconnect strategy gave up: no 'end' then, yet a later connect() may reach another server; a
 * Cluster says 'connect' once its slots are known and 'disconnect' when closed. Nodes joining or
 * leaving a Cluster are not announced.
 */
const EVENTS: Readonly<Record<"client" | "cluster", Readonly<Record<string, readonly string[]>>>> = {
  client: { close: ["reconnecting", "end", "terminated"], ready: ["ready"] },
  cluster: { close: ["disconnect"], ready: ["connect"] },
};

/** Redis's refusal of a command on a RESP2 connection in subscriber mode ("… are allowed in this context"). */
const SUBSCRIBER_MODE = /allowed in this context/;

/** One view per client, shared by every store on it: server-identity.ts keeps one identity per watched object. */
const views = new WeakMap<object, WatchedNodeRedis>();

export function watchedNodeRedis(client: NodeRedisBase, kind: NodeRedisKind, send: Send): WatchedNodeRedis {
  let view = views.get(client);
  if (view === undefined) {
    view = createView(client, kind, send);
    views.set(client, view);
  }
  return view;
}

function createView(client: NodeRedisBase, kind: NodeRedisKind, send: Send): WatchedNodeRedis {
  const events = EVENTS[kind === "cluster" ? "cluster" : "client"];
  const namesOf = (event: string) => events[event] ?? [];
  const call = (...args: string[]) =>
    send(undefined, args).catch((error: unknown) => {
      // server-identity.ts tells a refusal (cannot be checked) from a lost connection by this name;
      // a RESP2 connection the app subscribes on is refused every other command until it unsubscribes:
      // that is a state of the connection, as ioredis's own subscriber-mode error, not a server that refuses INFO
      if (isServerError(error) && !SUBSCRIBER_MODE.test(error.message)) {
        Object.defineProperty(error, "name", { value: "ReplyError" });
      }
      throw error;
    });
  return {
    get status() {
      if (client.isReady) return "ready";
      return client.isOpen ? "connecting" : "end";
    },
    isCluster: kind === "cluster",
    info: (...sections) => call("INFO", ...sections).then(String),
    call,
    on(event, listener) {
      for (const name of namesOf(event)) client.on(name, listener);
      return this;
    },
    off(event, listener) {
      for (const name of namesOf(event)) client.off(name, listener);
      return this;
    },
  };
}
