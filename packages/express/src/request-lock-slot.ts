import { IncomingMessage } from "node:http";

/**
 * `req.lock` without a property added to each request, for speed only.
 *
 * What it buys: Express swaps the prototype of every request (`Object.setPrototypeOf(req,
 * app.request)`), and V8 then builds a fresh hidden class for each property added to that object.
 * `req.lock = lock` cost some 10 µs of server CPU per locked request (a route that only assigns
 * `req.lock` against one that does not, in the same rounds), a gap of the bench row "HTTP: express
 * route" to the floor middleware. Instead, `http.IncomingMessage.prototype` gets, once, a `lock`
 * accessor whose value lives in a WeakMap keyed by the request: reading and assigning `req.lock`
 * work as before, the app's own assignments too, and the value goes with the request.
 *
 * What differs from an own property: `lock` is not among the request's own keys (`Object.keys`, a
 * spread), and `delete req.lock` leaves it. A request that does not inherit from IncomingMessage (a
 * test double) gets an own property, as before; so does every request when something else defined
 * `lock` on IncomingMessage.prototype first (another copy of this package's accessor is used as is).
 */
export function installLockSlot(): void {
  const shared = IncomingMessage.prototype;
  if (Object.hasOwn(shared, "lock")) return;
  const values = new WeakMap<object, unknown>();
  Object.defineProperty(shared, "lock", {
    get(this: object) {
      return values.get(this);
    },
    set(this: object, value: unknown) {
      values.set(this, value);
    },
    configurable: true,
    enumerable: false,
  });
}
