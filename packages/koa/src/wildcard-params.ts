/**
 * @koa/router gives a wildcard (`/files/*path`) as one string, `"a/b/c"`; Express 5 gives it as the
 * list of its segments. Handed to core as that list, it meets core's rule for wildcard paths: joined
 * with "/", and an empty, "." or ".." segment refused (400), since `/files/a//b` and `/files/a/b`
 * name one file and must never hold two locks. The route's path (`ctx.routerPath`, which
 * @koa/router documents) names its wildcards.
 */

/** The wildcard names of each route path seen (path-to-regexp v8: `*name`). */
const wildcardsByPath = new Map<string, readonly string[]>();
/** At most this many route paths are remembered: an app has a fixed set of routes. */
const MAX_PATHS = 10_000;
const WILDCARD = /\*([$_\p{ID_Start}][$\p{ID_Continue}]*)/gu;

function wildcardsOf(routerPath: string): readonly string[] {
  let names = wildcardsByPath.get(routerPath);
  if (names === undefined) {
    names = Array.from(routerPath.matchAll(WILDCARD), (match) => match[1] as string);
    if (wildcardsByPath.size < MAX_PATHS) wildcardsByPath.set(routerPath, names);
  }
  return names;
}

/** `params` with each wildcard of `routerPath` given as its list of segments; `params` itself when there is none. */
export function withWildcardLists(params: unknown, routerPath: unknown): unknown {
  if (typeof routerPath !== "string" || typeof params !== "object" || params === null) return params;
  const names = wildcardsOf(routerPath);
  if (names.length === 0) return params;
  const listed: Record<string, unknown> = { ...params };
  for (const name of names) {
    const value = listed[name];
    if (typeof value === "string") listed[name] = value.split("/");
  }
  return listed;
}
