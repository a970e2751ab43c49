import { randomFillSync } from "node:crypto";

const VALUE_BYTES = 16; // 128 bits
const POOL_VALUES = 256;
const pool = Buffer.allocUnsafe(VALUE_BYTES * POOL_VALUES);
let next = POOL_VALUES;

/** A fresh random lock value: 128 bits from node:crypto, hex encoded. One crypto call per 256 values. */
export function newLockValue(): string {
  if (next === POOL_VALUES) {
    randomFillSync(pool);
    next = 0;
  }
  const start = next++ * VALUE_BYTES;
  return pool.toString("hex", start, start + VALUE_BYTES);
}
