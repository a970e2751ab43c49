import { Lock } from "@redlock-kit/core";
import express from "express";
import { expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { useListeningBed } from "#test-helpers/redlock-bed.js";
import { createRedlockMiddleware } from "../src/index.js";

// req.lock lives in an accessor on IncomingMessage.prototype (src/request-lock-slot.ts): what a
// handler and the app's own code read and assign must be what an own property would give.
const bed = useListeningBed();
const urlOf = (app: express.Express) => bed.listen(app);

interface Seen {
  resources?: readonly string[];
  isLock: boolean;
  own: boolean;
}

const seen = (req: express.Request): Seen => ({
  resources: req.lock?.resources,
  isLock: req.lock instanceof Lock,
  own: Object.hasOwn(req, "lock"),
});

it("puts the request's own lock on req.lock, in the route, a router and a mounted app, without a property of the request", async () => {
  const redlock = createRedlockMiddleware(bed.dlm, { ttl: 10_000 });
  const app = express();
  const sub = express();
  const router = express.Router();
  sub.post("/orders/:id", redlock("slot-sub:{params.id}"), (req, res) => res.json(seen(req)));
  router.post("/orders/:id", redlock("slot-router:{params.id}"), (req, res) => res.json(seen(req)));
  app.post("/orders/:id", redlock("slot:{params.id}"), (req, res) => res.json(seen(req)));
  app.use("/sub", sub);
  app.use("/router", router);
  app.get("/open", (req, res) => res.json(seen(req)));
  const url = await urlOf(app);

  const answers = await Promise.all([
    send(`${url}/orders/1`, { method: "POST" }),
    send(`${url}/orders/2`, { method: "POST" }),
    send(`${url}/sub/orders/3`, { method: "POST" }),
    send(`${url}/router/orders/4`, { method: "POST" }),
    send(`${url}/open`),
  ]);
  expect(answers.map((answer) => [answer.status, JSON.parse(answer.text)])).toEqual([
    [200, { resources: ["slot:1"], isLock: true, own: false }],
    [200, { resources: ["slot:2"], isLock: true, own: false }],
    [200, { resources: ["slot-sub:3"], isLock: true, own: false }],
    [200, { resources: ["slot-router:4"], isLock: true, own: false }],
    // a request of the same server that took no lock has none
    [200, { isLock: false, own: false }],
  ]);
});

it("keeps what the app's own code assigns to req.lock, per request, and enumerates no lock", async () => {
  createRedlockMiddleware(bed.dlm);
  const app = express();
  app.get("/mine/:value", (req, res) => {
    const before = req.lock;
    (req as { lock?: unknown }).lock = { mine: req.params.value };
    res.json({ before: before ?? null, after: req.lock, keys: Object.keys(req).includes("lock") });
  });
  const url = await urlOf(app);
  const answers = await Promise.all(["a", "b"].map((value) => send(`${url}/mine/${value}`)));
  expect(answers.map((answer) => JSON.parse(answer.text))).toEqual([
    { before: null, after: { mine: "a" }, keys: false },
    { before: null, after: { mine: "b" }, keys: false },
  ]);
});
