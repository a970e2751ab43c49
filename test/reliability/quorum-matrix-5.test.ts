/** F3 at N = 5, the spec's own example size: 243 rows (the matrix itself is in helpers/quorum-matrix.ts). */
import { describeQuorumMatrix } from "../helpers/quorum-matrix.js";

describeQuorumMatrix(5);
