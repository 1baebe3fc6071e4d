/**
 * Phase 4 of the reaper: TerminateInstances, in batches of 1,000, of instances proven to be the
 * pool's only ({@link terminateOwned}). Writes: TerminateInstances.
 *
 * @module
 */
import { type EC2Client, TerminateInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { OWNER_TAG } from "../contract.ts";
import { describeError, type Logger } from "../task.ts";
import { chunks } from "./batching.ts";
import { type LiveInstance, TEMPLATE_TAG } from "./reads.ts";

/** TerminateInstances takes at most 1,000 ids. */
export const TERMINATE_BATCH = 1000;

/** EC2 errors that name ids to drop from a batch, which is then retried without them. */
const NAMED_ID_ERRORS = new Set([
  "InvalidInstanceID.NotFound",
  "InvalidInstanceID.Malformed",
  "OperationNotPermitted",
]);

export interface Terminated {
  terminated: string[];
  /** Ids EC2 does not know, or whose instance had ended before this call: gone already. */
  notFound: string[];
  refused: [string, string][];
  /** Ids not tried: the run's deadline had passed. */
  skipped: string[];
  errors: string[];
}

/**
 * TerminateInstances on pool instances only: each must carry its proof (see {@link readPool});
 * anything else throws, so no caller can terminate on a record's word. Instances proven by tag
 * and by template go in separate batches: an IAM policy that allows only tagged instances then
 * refuses the second kind without blocking the first. Ids EC2 names in an error never block
 * the rest of their batch.
 */
export async function terminateOwned(
  ec2: EC2Client,
  instances: LiveInstance[],
  log: Logger,
  /** True once no new batch may start (the run's deadline). */
  stop?: () => boolean,
): Promise<Terminated> {
  const done: Terminated = { terminated: [], notFound: [], refused: [], skipped: [], errors: [] };
  const unproven = instances.filter((i) => !i.proof).map((i) => i.id);
  if (unproven.length) {
    throw new Error(
      `refusing to terminate instances not proven the pool's: ${unproven.join(", ")}`,
    );
  }
  const ids = [...new Set(instances.map((i) => i.id))];
  const proofOf = new Map(instances.map((i) => [i.id, i.proof]));
  for (const proof of ["tag", "template"] as const) {
    const group = ids.filter((id) => proofOf.get(id) === proof);
    for (const batch of chunks(group, TERMINATE_BATCH)) {
      if (stop?.()) {
        done.skipped.push(...batch);
        continue;
      }
      let rest = batch;
      while (rest.length) {
        try {
          const out = await ec2.send(new TerminateInstancesCommand({ InstanceIds: rest }));
          // An instance that had ended already (a targeted run takes a proven one as alive,
          // lib/reaper/proof.ts) was not terminated by this run: it was gone.
          const ended = new Set(
            (out.TerminatingInstances ?? [])
              .filter((i) => i.PreviousState?.Name === "terminated")
              .map((i) => i.InstanceId),
          );
          done.terminated.push(...rest.filter((id) => !ended.has(id)));
          done.notFound.push(...rest.filter((id) => ended.has(id)));
          break;
        } catch (error) {
          const { name, message } = error as Error;
          const named = NAMED_ID_ERRORS.has(name) ? idsNamed(message, rest) : [];
          if (named.length === 0) {
            const hint = proof === "template" && name === "UnauthorizedOperation"
              ? ` (these are proven the pool's by ${TEMPLATE_TAG}, not tagged ${OWNER_TAG}: allow them in the IAM policy, see the README)`
              : "";
            done.errors.push(`terminate ${rest.length} instances: ${describeError(error)}${hint}`);
            break;
          }
          if (name === "OperationNotPermitted") {
            done.refused.push(...named.map((id): [string, string] => [id, message]));
          } else done.notFound.push(...named);
          rest = rest.filter((id) => !named.includes(id));
        }
      }
      log.info(`reaper: terminated ${done.terminated.length} of ${ids.length} instances`);
    }
  }
  return done;
}

/** The ids of a batch that an error message names (as whole words). */
function idsNamed(message: string, ids: string[]): string[] {
  const words = new Set(message.split(/[^A-Za-z0-9-]+/));
  return ids.filter((id) => words.has(id));
}
