import { assertRedisInstalled } from "./redis-installed.js";

export default function setup(): void {
  assertRedisInstalled();
}
