import { randomBytes } from "node:crypto";
import type { QueueTicket } from "./store.js";

/**
 * A Redlock's hand-over channel as one instance names it: the channel and a tag of that
 * instance's store, in its queue entries and on its subscriber connection. A server made a replica
 * of another instance while connected (REPLICAOF host port) keeps its connections, subscribers
 * included, and passes its new master's PUBLISH on to them: on one channel for every instance,
 * that copy of the master's hand-over counted as this instance's too, one server's grant twice
 * (docs/reliability.md, C12). On a channel of its own, nobody here hears the copy.
 */
export class InstanceChannel {
  // base64url has no '.' (nor the ':' queue entries are split on)
  readonly #tag = `.${randomBytes(6).toString("base64url")}`;
  #last: string | undefined;
  #lastName = "";

  /** `channel` as this instance's entries and subscriber name it (a Redlock has one channel: the last name is kept). */
  name(channel: string): string {
    if (channel !== this.#last) {
      this.#last = channel;
      this.#lastName = channel + this.#tag;
    }
    return this.#lastName;
  }

  /** `ticket` with this instance's channel. */
  ticket(ticket: QueueTicket): QueueTicket;
  ticket(ticket: QueueTicket | undefined): QueueTicket | undefined;
  ticket(ticket: QueueTicket | undefined): QueueTicket | undefined {
    return ticket === undefined ? undefined : { ...ticket, channel: this.name(ticket.channel) };
  }
}
