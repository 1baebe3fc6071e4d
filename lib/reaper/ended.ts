/**
 * EC2's word that an instance is dead: among ids the pool listing does not hold (heartbeats and
 * worker signals without a record, runner registrations), the instances EC2 reports
 * `terminated`, each with its proof of having been the pool's ({@link readEnded}). Absence from a
 * listing proves nothing (EC2's API is eventually consistent: a just-launched instance can be
 * missing for minutes, and a terminated one drops out of it after about an hour), so only this
 * answer lets the reaper treat an instance it did not terminate itself as dead. Reads only.
 *
 * @module
 */
import type { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { describeIds, ownership, type Proof } from "./reads.ts";

/** An instance EC2 reports terminated: its proof of having been the pool's, if any. */
export interface Ended {
  id: string;
  /** How it is proven the pool's (its tags, which EC2 keeps on terminated instances); undefined: not proven. */
  proof?: Proof;
}

/**
 * The instances among `ids` that EC2 reports `terminated` (one DescribeInstances by id per 200,
 * none when `ids` is empty), with their proof of belonging to the pool of `table`.
 */
export async function readEnded(
  ec2: EC2Client,
  ids: Iterable<string>,
  table: string,
  templateIds: Set<string>,
): Promise<Map<string, Ended>> {
  const ended = new Map<string, Ended>();
  const wanted = [...new Set(ids)];
  if (wanted.length === 0) return ended;
  for (const instance of await describeIds(ec2, wanted)) {
    if (instance.State?.Name !== "terminated" || !instance.InstanceId) continue;
    ended.set(instance.InstanceId, {
      id: instance.InstanceId,
      proof: ownership(instance, table, templateIds),
    });
  }
  return ended;
}
