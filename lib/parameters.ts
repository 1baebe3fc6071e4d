/**
 * Reconciles the operational parameters provision and release read from the table:
 * `idle_time_sec`, `max_runtime_min` and `subnet_ids`, each written only when it differs.
 *
 * The subnets are checked first (see lib/network.ts): they must exist and share one VPC, the VPC
 * of the runners' security groups when those are given. Otherwise the task fails and writes
 * nothing, rather than store subnets provision could never launch into.
 *
 * @module
 */
import { METADATA } from "./contract.ts";
import { checkIds, type InputSpec, type Reader, type Requirements, SUBNET } from "./inputs.ts";
import { reconcileMetadata } from "./metadata.ts";
import { describeSecurityGroups, describeSubnets, requireOneVpc } from "./network.ts";
import type { Change, SharedDesired, TaskContext, TaskOutcome } from "./task.ts";

/** The parameters task's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "idle-time-sec",
    env: ["REFRESH_IDLE_TIME_SEC"],
    kind: "int",
    default: "300",
    help: "seconds an idle instance may wait in the pool",
  },
  {
    name: "max-runtime-min",
    env: ["REFRESH_MAX_RUNTIME_MIN"],
    kind: "int",
    default: "30",
    help: "minutes a running instance may live",
  },
  {
    name: "subnet-ids",
    env: ["REFRESH_SUBNET_IDS"],
    kind: "list",
    help: "subnets instances launch in (comma or space separated)",
  },
];

/** What the parameters task cannot run without. */
export const REQUIRED: Requirements = ["subnet-ids"];

/** The parameters task's section of the desired state. */
export interface DesiredParameters {
  idleTimeSec: number;
  maxRuntimeMin: number;
  subnetIds: string[];
}

/** Reads the parameters task's inputs, recording problems on the reader. */
export function parseParameters(r: Reader): DesiredParameters {
  const idleTimeSec = r.int("idle-time-sec", 1);
  const maxRuntimeMin = r.int("max-runtime-min", 1);
  const subnetIds = checkIds(
    "subnet-ids",
    r.list("subnet-ids"),
    SUBNET,
    "a subnet id (subnet-…)",
    r.problems,
  );
  return {
    idleTimeSec: idleTimeSec!,
    maxRuntimeMin: maxRuntimeMin!,
    subnetIds: subnetIds ?? [],
  };
}

/** The part of the desired state the parameters task reads. */
export interface ParametersDesired extends Pick<SharedDesired, "region" | "table"> {
  parameters: DesiredParameters;
  /** The runners' security groups, whose VPC the subnets must be in. */
  launchTemplate: { securityGroupIds: string[] };
}

export async function reconcileParameters(
  ctx: TaskContext<ParametersDesired>,
): Promise<TaskOutcome> {
  const { idleTimeSec, maxRuntimeMin, subnetIds } = ctx.desired.parameters;
  const desired: [string, unknown][] = [
    [METADATA.idleTimeSec, idleTimeSec],
    [METADATA.maxRuntimeMin, maxRuntimeMin],
    [METADATA.subnetIds, subnetIds],
  ];
  const { ec2 } = ctx.clients;
  const { region } = ctx.desired;
  const subnets = await describeSubnets(ec2, subnetIds);
  const vpc = requireOneVpc("subnet-ids", subnetIds, subnets, region);
  const groupIds = ctx.desired.launchTemplate.securityGroupIds;
  // Groups that do not exist are the launch-template task's to report; here only their VPC counts.
  for (const group of await describeSecurityGroups(ec2, groupIds)) {
    if (group.vpc !== vpc) {
      throw new Error(
        `subnet-ids: the subnets are in ${vpc} but security group ${group.id} (${group.name}) is in ${group.vpc}; ` +
          "expected subnets in the security groups' VPC",
      );
    }
  }
  const warnings = subnets.filter((s) => s.freeIps === 0).map((s) =>
    `subnet ${s.id} (${s.zone}) has no free IP address: no runner can launch there`
  );
  const found: Record<string, unknown> = {
    vpc,
    subnets: Object.fromEntries(subnets.map((s) => [s.id, `${s.zone}, ${s.freeIps} free IPs`])),
  };
  const changes: Change[] = [];
  for (const [id, value] of desired) {
    const { stored, change } = await reconcileMetadata(ctx, id, value);
    found[id] = stored ?? null;
    if (change) changes.push(change);
  }
  return {
    summary: changes.length === 0
      ? "all parameters match"
      : `${changes.length} of ${desired.length} parameters ${ctx.dryRun ? "would be " : ""}written`,
    found,
    changes,
    warnings,
  };
}
