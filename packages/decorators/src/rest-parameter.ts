/**
 * Whether parameter `index` of `method` is its rest parameter (`...ids`), read from the method's
 * source text: a parameter decorator is told only the index, and `design:paramtypes` gives a rest
 * parameter's element type. A parameter list this does not read plainly (a regular expression, a
 * division or a template literal in a default value) counts as having none.
 */
export function isRestParameter(method: (...args: never[]) => unknown, index: number): boolean {
  // `length` counts the parameters before the first default or rest one: those are plain
  if (index < method.length) return false;
  return parameterList(Function.prototype.toString.call(method))?.[index]?.startsWith("...") === true;
}

/** The source text of each parameter of a method's source, or undefined when it cannot be read plainly. */
function parameterList(source: string): string[] | undefined {
  const params: string[] = [];
  let current = "";
  let depth = 0; // brackets open; the parameter list is the first "(" outside a computed name's "[...]"
  let inList = false;
  for (let i = 0; i < source.length; i++) {
    const char = source[i] as string;
    let text = char;
    if (char === '"' || char === "'") {
      const end = stringEnd(source, i);
      if (end === -1) return undefined;
      text = source.slice(i, end + 1);
      i = end;
    } else if (char === "/") {
      const next = source[i + 1];
      const end = next === "/" ? source.indexOf("\n", i) : next === "*" ? source.indexOf("*/", i + 2) + 1 : -1;
      if (end <= 0) return undefined;
      i = end;
      continue;
    } else if (char === "`") {
      return undefined;
    } else if (char === "(" && !inList && depth === 0) {
      inList = true;
      depth = 1;
      continue;
    } else if ("([{".includes(char)) {
      depth++;
    } else if (")]}".includes(char)) {
      depth--;
      if (inList && depth === 0) {
        params.push(current.trim());
        return params.filter((param) => param !== ""); // `()`, and a trailing comma
      }
    } else if (char === "," && inList && depth === 1) {
      params.push(current.trim());
      current = "";
      continue;
    }
    if (inList) current += text;
  }
  return undefined;
}

/** The index of the quote that closes the string opened at `start`, or -1. */
function stringEnd(source: string, start: number): number {
  const quote = source[start];
  for (let i = start + 1; i < source.length; i++) {
    if (source[i] === "\\") i++;
    else if (source[i] === quote) return i;
  }
  return -1;
}
