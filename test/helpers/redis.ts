/**
 * Where a test starts and stops Redis, whatever the topology: N independent servers for a file
 * (`useRedisServers`), single servers (`startServer(s)`), a replica (`startReplicaOf`), a Cluster
 * (`startCluster`) and a Sentinel set (`startSentinel`). Every process is real, on a free loopback
 * port, and stopped by its PID.
 * Import it as `#test-helpers/redis.js` from any package's tests.
 */
export * from "./redis-servers.js";
export {
  startCluster,
  startReplicaOf,
  startSentinel,
  type TestCluster,
  type TestSentinel,
  until,
} from "./topologies.js";
