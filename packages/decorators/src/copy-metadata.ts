import "reflect-metadata";

/**
 * Copies every reflect-metadata entry defined on `from` itself to `to`, so that metadata other
 * decorators put on the original method (NestJS's `SetMetadata`, roles, guards) is still found
 * on the wrapper that replaces it.
 */
export function copyOwnMetadata(from: object, to: object): void {
  for (const key of Reflect.getOwnMetadataKeys(from)) {
    Reflect.defineMetadata(key, Reflect.getOwnMetadata(key, from), to);
  }
}
