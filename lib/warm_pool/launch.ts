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
import { classSpec, type Shortages, SHORTAGES_KEY, type WarmState } from "./read.ts";
import type { UsageClass } from "./inputs.ts";
import type { WarmClass, WarmPlan } from "./plan.ts";

/** The InitialRunId of warm instances: never a workflow run id (those are numbers). */
export function warmRunId(resourceClass: string, now: Date): string {
  const time = timestamp(now).replace(/[-:]/g, "");
  return `warm-${resourceClass}-${time}`.slice(0, 128);
}

/** How long a spot capacity shortage is remembered: no spot request for the key until then. */
export const SHORTAGE_MIN = 30;

/** CreateFleet error codes that mean EC2 has no capacity (or quota) for the request now. */
export const CAPACITY_ERRORS: ReadonlySet<string> = new Set([
  "InsufficientInstanceCapacity",
  "InsufficientCapacity",
  "InsufficientHostCapacity",
  "MaxSpotInstanceCountExceeded",
  "UnfulfillableCapacity",
  "SpotMaxPriceTooLow",
]);

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
  const target = (key: string, n: number) => `${n} ${key} instance${n === 1 ? "" : "s"}`;
  const shortages: Shortages = {};
  for (const [key, view] of short) {
    const spec = classSpec(ctx, read, view.cls);
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
          target: target(key, view.launch),
          detail: `once the other tasks have written it: ${missing}`,
        });
      } else progress.errors.push(`cannot launch ${target(key, view.launch)}: ${missing}`);
      continue;
    }
    // A spot key whose capacity is known short goes on-demand at once (when fallback is on).
    const fallback = view.usage === "spot" && ctx.desired.warmPool.spotFallback;
    const usage = view.short && fallback ? "on-demand" : view.usage;
    const request = (u: UsageClass, n: number) =>
      fleetRequest(ctx, read.template!, read.subnetIds, view.cls, spec, n, now, u);
    if (ctx.dryRun) {
      progress.changes.push({
        action: "launch",
        target: target(key, view.launch),
        detail: launchDetail(read.template, view, usage),
      });
      continue;
    }
    const wanted = view.launch;
    try {
      const first = await launchClass(ctx, request(usage, wanted), key, view, now, progress, {
        fallbackFrom: usage !== view.usage ? view.usage : undefined,
      });
      if (usage !== view.usage) {
        view.fellBack = { count: first.launched, why: read.shortages[key]?.why ?? "" };
      }
      const rest = wanted - first.launched;
      if (rest > 0 && first.capacity && usage === "spot" && fallback) {
        // Spot capacity is short: remembered for SHORTAGE_MIN, the rest launched on-demand now.
        shortages[key] = {
          until: timestamp(new Date(now.getTime() + SHORTAGE_MIN * 60_000)),
          why: first.why,
        };
        const second = await launchClass(
          ctx,
          request("on-demand", rest),
          key,
          view,
          now,
          progress,
          {
            fallbackFrom: "spot",
          },
        );
        view.fellBack = { count: second.launched, why: first.why };
        if (second.launched < rest) {
          progress.errors.push(
            `launched ${second.launched} of ${rest} ${key} instances on-demand in place of spot: ${
              second.why || "EC2 gave no reason"
            }; retried next run`,
          );
        }
      } else if (rest > 0) {
        progress.errors.push(
          `launched ${first.launched} of ${wanted} ${key} instances: ${
            first.why || "EC2 gave no reason"
          }; retried next run`,
        );
      }
    } catch (error) {
      progress.errors.push(
        `launching ${wanted} ${key} instances failed: ${describeError(error)}; retried next run`,
      );
    }
  }
  for (const [key, view] of short) {
    if (view.fellBack === null) continue;
    const until = shortages[key]?.until ?? read.shortages[key]?.until;
    progress.warnings.push(
      `${key}: spot capacity is short (${view.fellBack.why || "remembered"}): ` +
        `${view.fellBack.count} launched on-demand instead; spot is asked for again after ${until}`,
    );
  }
  if (Object.keys(shortages).length > 0) {
    await rememberShortages(ctx, read.shortages, shortages, now, progress);
  }
}

/** Writes the shortages still running with the new ones (one PutItem, refresh's own item). */
async function rememberShortages(
  ctx: WarmContext,
  known: Shortages,
  found: Shortages,
  now: Date,
  progress: Progress,
): Promise<void> {
  const current = Object.fromEntries(
    Object.entries(known).filter(([, s]) => Date.parse(s.until) > now.getTime()),
  );
  try {
    await ctx.clients.ddb.send(
      new PutCommand({
        TableName: ctx.desired.table,
        Item: {
          ...SHORTAGES_KEY,
          entityType: "REFRESH",
          identifier: "capacity_shortages",
          updatedAt: timestamp(now),
          value: { ...current, ...found },
        },
      }),
    );
  } catch (error) {
    progress.warnings.push(
      `could not remember the spot capacity shortage: ${describeError(error)}`,
    );
  }
}

function launchDetail(template: TemplateDefault, view: WarmClass, usage: UsageClass): string {
  const instead = usage !== view.usage ? ` (in place of ${view.usage}: capacity short)` : "";
  return `CreateFleet from ${template.id} version ${template.version} ($Default), ${usage}${instead}: minimum ${view.minimum}, ${view.kept.length} ready, ${view.booting} booting`;
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
  usageClass: UsageClass = ctx.desired.warmPool.usageClass,
): CreateFleetCommandInput {
  const { instanceTypes } = ctx.desired.warmPool;
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
    // Every allowed type in every subnet in one request: EC2 picks where capacity is.
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
    ClientToken: sha256(`${ctx.desired.table}/${runId}/${count}/${usageClass}`).slice(0, 64),
  };
}

/** Tag naming the class a warm instance was launched for (for people; nothing relies on it). */
export const WARM_TAG = "refresh:warm-pool";

/** What one CreateFleet launched, and why not all of it. */
interface Launched {
  launched: number;
  /** EC2's reasons for what it did not launch. */
  why: string;
  /** Whether those reasons are capacity (or quota) shortages. */
  capacity: boolean;
}

async function launchClass(
  ctx: WarmContext,
  input: CreateFleetCommandInput,
  key: string,
  view: WarmClass,
  now: Date,
  progress: Progress,
  options: { fallbackFrom?: UsageClass | undefined },
): Promise<Launched> {
  const usageClass = input.TargetCapacitySpecification!.DefaultTargetCapacityType as UsageClass;
  let out;
  try {
    out = await ctx.clients.ec2.send(new CreateFleetCommand(input));
  } catch (error) {
    const code = (error as { name?: string }).name ?? "";
    if (!CAPACITY_ERRORS.has(code)) throw error;
    return { launched: 0, why: describeError(error), capacity: true };
  }
  const launched = (out.Instances ?? []).flatMap((i) =>
    (i.InstanceIds ?? []).map((id) => ({
      id,
      instanceType: i.InstanceType ?? "",
      usageClass: i.Lifecycle === "spot" || i.Lifecycle === "on-demand" ? i.Lifecycle : usageClass,
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
            resourceClass: view.cls,
            instanceType: instance.instanceType,
            usageClass: instance.usageClass,
            ...(options.fallbackFrom ? { fallbackFrom: options.fallbackFrom } : {}),
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
  view.launched += written.length;
  if (written.length) {
    progress.changes.push({
      action: "launch",
      target: `${written.length} ${key} instance${written.length === 1 ? "" : "s"}`,
      detail: `${written.join(", ")} (${usageClass}${
        options.fallbackFrom ? ` in place of ${options.fallbackFrom}` : ""
      }); idle until ${threshold}, advertised once ready`,
    });
  }
  const errors = out.Errors ?? [];
  const why = [...new Set(errors.map((e) => `${e.ErrorCode}: ${e.ErrorMessage}`))].join("; ");
  return {
    launched: launched.length,
    why,
    capacity: errors.some((e) => CAPACITY_ERRORS.has(e.ErrorCode ?? "")),
  };
}
