/**
 * The look-up a targeted run makes for the instances it is about to reap (records past their
 * threshold, records already `terminated`): for each, its proof of belonging to the pool and,
 * where that proof is missing, EC2's state, and nothing else. Those are all the lock, the
 * termination and the expunge need (no image, launch time or other tag: these instances are
 * reaped, never drained), so no instance is described in full:
 *
 * - **proof**: DescribeTags of those ids, for the two keys a proof is read from and the template
 *   version ({@link PROOF_KEYS}; {@link TAG_IDS} ids a call, so filter values stay within EC2's
 *   200). EC2 keeps an instance's tags while it lists the instance (about an hour after it
 *   ended), and no job can forge them: the instance role has no `ec2:CreateTags`, and keys
 *   starting `aws:` are EC2's own.
 * - **state**, of the ids without a proof only (in a steady pool, none): DescribeInstanceStatus by
 *   id with `IncludeAllInstances` (at most {@link STATUS_IDS} ids a call, EC2's limit), which
 *   tells an instance alive outside the pool (`foreign`: left alone) from one that ended or that
 *   EC2 does not know (its record is expunged).
 *
 * A proven instance is taken as alive: the termination asks EC2 to end it whatever its state, and
 * EC2's answer says whether it had ended already (lib/reaper/terminate.ts), so a proven instance
 * that ended meanwhile is expunged as "already gone", not counted as terminated.
 *
 * DescribeInstanceStatus fails a whole call when one id is unknown to EC2 (a record naming an
 * instance long gone, or not an instance at all: the table is writable by every job). Such a
 * batch is described instead with an `instance-id` filter ({@link describeIds}), which leaves
 * unknown ids out; so every id is answered for, as a full description would. Reads only.
 *
 * @module
 */
import {
  DescribeInstanceStatusCommand,
  DescribeTagsCommand,
  type EC2Client,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { OWNER_TAG } from "../contract.ts";
import { TEMPLATE_VERSION_TAG } from "../rollout.ts";
import { chunks, forEachLimit } from "./batching.ts";
import {
  ALIVE_EC2,
  askable,
  describeIds,
  FILTER_VALUES,
  type LiveInstance,
  ownership,
  type Pool,
  TEMPLATE_TAG,
  type Templates,
} from "./reads.ts";

/** DescribeInstanceStatus takes at most 100 instance ids a call. */
export const STATUS_IDS = 100;
/**
 * The tags a proof of ownership is read from, and the template version (the pool view judges an
 * instance's version by it, lib/rollout.ts).
 */
export const PROOF_KEYS = [OWNER_TAG, TEMPLATE_TAG, TEMPLATE_VERSION_TAG];
/** Ids per DescribeTags call: with the keys, {@link FILTER_VALUES} filter values. */
export const TAG_IDS = FILTER_VALUES - PROOF_KEYS.length;
/** Calls of each kind in flight at once. */
const LOOKUPS = 4;

/** Error codes of an id EC2 does not know (or that is no instance id). */
const UNKNOWN_ID = new Set(["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"]);

/**
 * The pool as EC2 sees the instances `ids` name, from their proof tags and, of those without a
 * proof, their states (see the module documentation): `checked` holds exactly those ids; a proven
 * one is `alive`; one without a proof is `foreign` when alive, in `ended` when EC2 reports it
 * terminated, and nowhere when EC2 does not know it.
 */
export async function readProofs(
  ec2: EC2Client,
  table: string,
  templates: Templates,
  ids: string[],
): Promise<Pool> {
  const asked = askable(ids);
  const tags = await readTags(ec2, asked);
  const alive = new Map<string, LiveInstance>();
  const unproven: string[] = [];
  for (const id of asked) {
    const own = tags.get(id) ?? {};
    const Tags = Object.entries(own).map(([Key, Value]) => ({ Key, Value }));
    const proof = ownership({ Tags }, table, templates.templateIds);
    if (proof) alive.set(id, { id, proof, tags: own });
    else unproven.push(id);
  }
  const foreign = new Map<string, LiveInstance>();
  const ended = new Set<string>();
  for (const [id, state] of await readStates(ec2, unproven)) {
    if (state === "terminated") ended.add(id);
    else if (ALIVE_EC2.includes(state)) foreign.set(id, { id, tags: tags.get(id) ?? {} });
  }
  return { ...templates, alive, foreign, checked: new Set(ids), ended };
}

/** Each known instance's state name, by id; ids EC2 does not know are left out. */
async function readStates(ec2: EC2Client, ids: string[]): Promise<Map<string, string>> {
  const states = new Map<string, string>();
  await forEachLimit(chunks(ids, STATUS_IDS), LOOKUPS, async (batch) => {
    try {
      const out = await ec2.send(
        new DescribeInstanceStatusCommand({ InstanceIds: batch, IncludeAllInstances: true }),
      );
      for (const s of out.InstanceStatuses ?? []) {
        if (s.InstanceId && s.InstanceState?.Name) states.set(s.InstanceId, s.InstanceState.Name);
      }
    } catch (error) {
      if (!UNKNOWN_ID.has((error as Error).name)) throw error;
      for (const i of await describeIds(ec2, batch)) {
        if (i.InstanceId && i.State?.Name) states.set(i.InstanceId, i.State.Name);
      }
    }
  });
  return states;
}

/** The {@link PROOF_KEYS} tags of each instance that has any, by id. */
async function readTags(
  ec2: EC2Client,
  ids: string[],
): Promise<Map<string, Record<string, string>>> {
  const tags = new Map<string, Record<string, string>>();
  await forEachLimit(chunks(ids, TAG_IDS), LOOKUPS, async (batch) => {
    let token: string | undefined;
    do {
      const out = await ec2.send(
        new DescribeTagsCommand({
          Filters: [{ Name: "resource-id", Values: batch }, { Name: "key", Values: PROOF_KEYS }],
          MaxResults: 1000,
          NextToken: token,
        }),
      );
      for (const t of out.Tags ?? []) {
        if (!t.ResourceId || t.Key === undefined) continue;
        const own = tags.get(t.ResourceId) ?? {};
        own[t.Key] = t.Value ?? "";
        tags.set(t.ResourceId, own);
      }
      token = out.NextToken;
    } while (token);
  });
  return tags;
}
