/** F3 at N = 3 with node-redis clients as the instances: the same 27 rows as quorum-matrix.test.ts. */
import { describeQuorumMatrix } from "../helpers/quorum-matrix.js";

describeQuorumMatrix(3, "node-redis");
