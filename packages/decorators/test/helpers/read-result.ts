/**
 * What a caller of a `@Locked` method that hands back an iterable gets: the error the call rejected
 * with, or `"resolved"` once every item of what it resolved to was read (pushed to `items`), the
 * generator's body running then, after the release.
 */
export async function readResult(call: unknown, items: unknown[]): Promise<unknown> {
  return Promise.resolve(call).then(
    async (value) => {
      for await (const item of value as AsyncIterable<unknown>) items.push(item);
      return "resolved";
    },
    (error: unknown) => error,
  );
}

/** The TypeError a `@Locked` call rejects with when its method hands back a generator object. */
export const generatorRefused = (method: string) =>
  new TypeError(`@Locked method ${method} returned a generator object: its body would run after the lock is released`);
