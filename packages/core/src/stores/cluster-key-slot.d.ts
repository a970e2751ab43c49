declare module "cluster-key-slot" {
  /** The Redis Cluster hash slot of a key (honours {hash tags}). */
  function calculateSlot(key: string | Buffer): number;
  namespace calculateSlot {
    /** The common slot of all keys, or -1 when they differ. */
    function generateMulti(keys: (string | Buffer)[]): number;
  }
  export default calculateSlot;
}
