/**
 * Prints the generated bootstrap's user-data size, compact (what is sent) and commented, and the
 * compressed room left for a setup script (`--pre-runner-script`) under EC2's 16 KB:
 *
 *     sh test/support/tools.sh deno run --allow-read bench/user_data_size_bench.ts
 *
 * Uses the default inputs (`--runner-version latest`, no setup script), with the same-length
 * stand-ins refresh checks the size with before the newest release is known.
 *
 * @module
 */
import { bootstrapScript, type BootstrapSpec } from "../lib/bootstrap.ts";
import {
  type BootstrapInputs,
  encodeUserData,
  gzip,
  plannedInputs,
  USER_DATA_MAX_BYTES,
} from "../lib/user_data.ts";

const INPUTS: BootstrapInputs = {
  table: "refresh-pool",
  region: "us-east-1",
  githubUrl: "https://github.com/acme/widgets",
  poolLabel: "refresh-pool-0123456789abcdef",
  runner: { version: "latest" },
};

const spec = plannedInputs(INPUTS) as BootstrapSpec;
const bytes = (text: string) => new TextEncoder().encode(text);
const compact = bytes(bootstrapScript(spec));
const commented = bytes(bootstrapScript(spec, { commented: true }));
const sent = encodeUserData(bootstrapScript(spec));
if ("tooLarge" in sent) throw new Error("the generated bootstrap does not fit EC2's limit");

console.log(`compact (sent):  ${compact.length} bytes, ${sent.bytes.length} gzip-compressed`);
console.log(
  `commented:       ${commented.length} bytes, ${gzip(commented).length} gzip-compressed`,
);
console.log(
  `room for a setup script: about ${USER_DATA_MAX_BYTES - sent.bytes.length} bytes ` +
    `gzip-compressed (EC2 allows ${USER_DATA_MAX_BYTES})`,
);
