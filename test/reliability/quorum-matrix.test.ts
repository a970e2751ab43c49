/** F3 at N = 3: 27 rows (the matrix itself is in helpers/quorum-matrix.ts). */
import { describeQuorumMatrix } from "../helpers/quorum-matrix.js";

describeQuorumMatrix(3);
