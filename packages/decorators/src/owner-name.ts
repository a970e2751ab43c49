/** The class name of a legacy decorator's target: the constructor for a static method, else the prototype's. */
export function ownerName(target: object): string {
  const owner = typeof target === "function" ? target : (target as { constructor?: unknown }).constructor;
  return typeof owner === "function" && owner.name ? owner.name : "(anonymous class)";
}
