/**
 * Hono takes the rest of a path with a regex parameter (`/files/:path{.+}`) and gives it as one
 * string, `"a//b"` for `/files/a//b`; Express 5 gives its wildcard as the list of its segments.
 * Handed to core as that list, it meets core's rule for wildcard paths: joined with "/", and an
 * empty, "." or ".." segment refused (400), since `/files/a//b` and `/files/a/b` name one file and
 * must never hold two locks. Which parameters are paths, the matched route's path says
 * (`c.req.routePath`): a `:name{regex}` whose regex takes a "/". A plain `:id` (Hono: `[^/]+`) or a
 * regex that takes no "/" (`:id{[0-9]+}`) stays the string it is.
 */

/** A `:name{regex}` parameter in a route path (as Hono reads it: the regex ends its segment). */
const REGEX_PARAM = /:([^/{}]+)\{(.+?)\}(?=\/|$)/g;
/** A value that reads differently as a list of segments: it has a "/" or is a dot segment. */
const SEGMENTED = /\/|^\.\.?$/;

/**
 * `params` (`c.req.param()`) with each path parameter of the matched route given as its list of
 * segments when its value has a "/" or is "." or "..": a copy then, so that the handler's own
 * `c.req.param()` stays strings whichever Hono version caches it.
 */
export function withPathLists(
  params: Record<string, string>,
  // `c.req`: its `routePath` (Hono 4.8 deprecates it for "hono/route", which Hono 4.0 to 4.7 lack)
  req: { readonly routePath: string },
): Record<string, string | string[]> {
  // any other value reads the same either way: for most requests one test per parameter, and the
  // route's path (Hono builds an array on each read) is not read
  if (!hasSegmented(params)) return params;
  const path = req.routePath;
  if (!path.includes("{")) return params;
  const listed: Record<string, string | string[]> = { ...params };
  for (const [, name, pattern] of path.matchAll(REGEX_PARAM)) {
    const value = params[name as string];
    if (typeof value === "string" && SEGMENTED.test(value) && takesSlash(pattern as string, value)) {
      listed[name as string] = value.split("/");
    }
  }
  return listed;
}

function hasSegmented(params: Record<string, string>): boolean {
  for (const name in params) if (SEGMENTED.test(params[name] as string)) return true;
  return false;
}

/**
 * Whether `pattern`, anchored as Hono anchors it, matches a string with a "/": `a/b`, or the
 * (decoded) value itself (`.+\.png` takes `a/b.png`). A value whose "/" came from `%2F` in a
 * segment that the regex keeps slash-free (`[^/]+`) does not match: that parameter is a name.
 */
function takesSlash(pattern: string, value: string): boolean {
  const anchored = new RegExp(`^(?:${pattern})$`);
  return anchored.test("a/b") || (value.includes("/") && anchored.test(value));
}
