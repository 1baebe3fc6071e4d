/**
 * Phase 4 of the warm pool: launches each class's shortfall as provision does (CreateFleet
 * `instant` from the pool's template at `$Default`) and writes each instance's record idle and
 * unclaimed (PutItem).
 *
 * @module
 */
import {
  CreateFleetCommand,
  type CreateFleetCommandInput,
  type FleetLaunchTemplateOverridesRequest,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, OWNER_TAG, sha256, timestamp } from "../contract.ts";
import type { TemplateDefault } from "../rollout.ts";
import { describeError } from "../task.ts";
import type { Progress, WarmContext } from "./context.ts";
import { classSpec, type WarmState } from "./read.ts";
import type { WarmClass, WarmPlan } from "./plan.ts";

/** The InitialRunId of warm instances: never a workflow run id (those are numbers). */
export function warmRunId(resourceClass: string, now: Date): string {
  const time = timestamp(now).replace(/[-:]/g, "");
  return `warm-${resourceClass}-${time}`.slice(0, 128);
}

/** Phase 4: see the module documentation. */
export async function launch(
  ctx: WarmContext,
  read: WarmState,
  plan: WarmPlan,
  now: Date,
  progress: Progress,
): Promise<void> {
  const short = Object.entries(plan.classes).filter(([, v]) => v.launch > 0);
  if (short.length === 0) return;
  const name = ctx.desired.launchTemplate.name;
  const target = (cls: string, n: number) => `${n} ${cls} instance${n === 1 ? "" : "s"}`;
  for (const [cls, view] of short) {
    const spec = classSpec(ctx, read, cls);
    const missing = read.template === null
      ? `no launch template ${name} tagged ${OWNER_TAG}=${ctx.desired.table} (the launch-template task makes it)`
      : read.subnetIds.length === 0
      ? "the table holds no subnet_ids (the parameters task writes them)"
      : typeof spec === "string"
      ? spec
      : undefined;
    if (missing !== undefined || read.template === null || typeof spec === "string") {
      // Under --dry-run the other tasks would write what is missing first.
      if (ctx.dryRun) {
        progress.changes.push({
          action: "launch",
          target: target(cls, view.launch),
          detail: `once the other tasks have written it: ${missing}`,
        });
      } else progress.errors.push(`cannot launch ${target(cls, view.launch)}: ${missing}`);
      continue;
    }
    const input = fleetRequest(ctx, read.template, read.subnetIds, cls, spec, view.launch, now);
    if (ctx.dryRun) {
      progress.changes.push({
        action: "launch",
        target: target(cls, view.launch),
        detail: launchDetail(read.template, view),
      });
      continue;
    }
    try {
      await launchClass(ctx, input, cls, view, now, progress);
    } catch (error) {
      progress.errors.push(
        `launching ${view.launch} ${cls} instances failed: ${
          describeError(error)
        }; retried next run`,
      );
    }
  }
}

function launchDetail(template: TemplateDefault, view: WarmClass): string {
  return `CreateFleet from ${template.id} version ${template.version} ($Default): minimum ${view.minimum}, ${view.kept.length} ready, ${view.booting} booting`;
}

/** The CreateFleet request, as provision makes it, for `count` instances of a class. */
export function fleetRequest(
  ctx: Pick<WarmContext, "desired">,
  template: TemplateDefault,
  subnetIds: string[],
  cls: string,
  spec: { cpu: number; mmem: number },
  count: number,
  now: Date,
): CreateFleetCommandInput {
  const { usageClass, instanceTypes } = ctx.desired.warmPool;
  const overrides: FleetLaunchTemplateOverridesRequest[] = subnetIds.map((subnet) => ({
    SubnetId: subnet,
    InstanceRequirements: {
      VCpuCount: { Min: spec.cpu, Max: spec.cpu },
      MemoryMiB: { Min: spec.mmem },
      BurstablePerformance: "excluded",
      ...(instanceTypes.length ? { AllowedInstanceTypes: instanceTypes } : {}),
    },
  }));
  const runId = warmRunId(cls, now);
  return {
    Type: "instant",
    LaunchTemplateConfigs: [{
      LaunchTemplateSpecification: { LaunchTemplateId: template.id, Version: "$Default" },
      Overrides: overrides,
    }],
    TargetCapacitySpecification: {
      TotalTargetCapacity: count,
      DefaultTargetCapacityType: usageClass,
    },
    ...(usageClass === "spot"
      ? { SpotOptions: { AllocationStrategy: "price-capacity-optimized" } }
      : { OnDemandOptions: { AllocationStrategy: "lowest-price" } }),
    TagSpecifications: [{
      ResourceType: "instance",
      Tags: [
        { Key: "AllowSelfTermination", Value: "true" },
        { Key: "InitialRunId", Value: runId },
        // A request's instance tags may replace the template's: the ownership tag goes here too.
        { Key: OWNER_TAG, Value: ctx.desired.table },
        { Key: WARM_TAG, Value: cls },
      ],
    }],
    // The same request retried by the SDK (a lost reply) launches nothing more.
    ClientToken: sha256(`${ctx.desired.table}/${runId}/${count}`).slice(0, 64),
  };
}

/** Tag naming the class a warm instance was launched for (for people; nothing relies on it). */
export const WARM_TAG = "refresh:warm-pool";

async function launchClass(
  ctx: WarmContext,
  input: CreateFleetCommandInput,
  cls: string,
  view: WarmClass,
  now: Date,
  progress: Progress,
): Promise<void> {
  const out = await ctx.clients.ec2.send(new CreateFleetCommand(input));
  const launched = (out.Instances ?? []).flatMap((i) =>
    (i.InstanceIds ?? []).map((id) => ({
      id,
      instanceType: i.InstanceType ?? "",
      usageClass: i.Lifecycle === "spot" || i.Lifecycle === "on-demand"
        ? i.Lifecycle
        : ctx.desired.warmPool.usageClass,
    }))
  );
  const threshold = timestamp(new Date(now.getTime() + ctx.desired.warmPool.holdMin * 60_000));
  const written: string[] = [];
  for (const instance of launched) {
    try {
      await ctx.clients.ddb.send(
        new PutCommand({
          TableName: ctx.desired.table,
          Item: item("INSTANCE", instance.id, now, {
            state: "idle",
            runId: "",
            threshold,
            resourceClass: cls,
            instanceType: instance.instanceType,
            usageClass: instance.usageClass,
          }),
          ConditionExpression: "attribute_not_exists(PK)",
        }),
      );
      written.push(instance.id);
    } catch (error) {
      // Without a record the reaper terminates it as an orphan after its grace period.
      progress.errors.push(
        `launched ${instance.id} but writing its record failed: ${describeError(error)}`,
      );
    }
  }
  view.launched = written.length;
  if (written.length) {
    progress.changes.push({
      action: "launch",
      target: `${written.length} ${cls} instance${written.length === 1 ? "" : "s"}`,
      detail: `${written.join(", ")}; idle until ${threshold}, advertised once ready`,
    });
  }
  if (launched.length < view.launch) {
    const why = (out.Errors ?? []).map((e) => `${e.ErrorCode}: ${e.ErrorMessage}`);
    progress.errors.push(
      `launched ${launched.length} of ${view.launch} ${cls} instances: ${
        [...new Set(why)].join("; ") || "EC2 gave no reason"
      }; retried next run`,
    );
  }
}
