import { randomFillSync } from "node:crypto";

const VALUE_BYTES = 16; // 128 bits
const VALUE_CHARS = 2 * VALUE_BYTES;
const POOL_VALUES = 256;
const pool = Buffer.allocUnsafe(VALUE_BYTES * POOL_VALUES);
/** The pool, hex encoded at once: slicing a value off a string costs a fraction of encoding it (`Buffer#toString`) per lock. */
let hex = "";
let next = POOL_VALUES;

/** A fresh random lock value: 128 bits from node:crypto, hex encoded. One crypto call and one encoding per 256 values. */
export function newLockValue(): string {
  if (next === POOL_VALUES) {
    randomFillSync(pool);
    hex = pool.toString("hex");
    next = 0;
  }
  const start = next++ * VALUE_CHARS;
  return hex.slice(start, start + VALUE_CHARS);
}
