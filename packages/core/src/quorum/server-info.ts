/** A field of the text `INFO server` answers (`run_id`, `redis_mode`), trimmed; undefined when absent or empty. */
export function infoField(info: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim() || undefined;
}
