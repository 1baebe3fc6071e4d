/**
 * The warm pool: keeps, per resource class, a minimum number of idle instances ready to be
 * claimed, so a job starts on a machine that is already up instead of waiting for a cold boot.
 * Off by default (`--warm-pool` unset: the task returns at once and calls nothing).
 *
 * `reconcileWarmPool` runs these phases, each a function below:
 *
 * 1. **read** ({@link readWarmState}): the table's `resource_class_config` and `subnet_ids`
 *    records (what provision reads), every instance record, heartbeat and worker signal, the
 *    pool's launch template (tagged for this table) and its live instances (by the ownership tag,
 *    or by EC2's template tag naming that template, as the reaper proves them).
 * 2. **plan** ({@link planWarmPool}, pure): per class, the minimum now (0 outside the schedule);
 *    its idle, unclaimed, unexpired instances sorted into **ready** (worker signal `UD_OK`, or
 *    `UD_REMOVE_REG_REMOVE_RUN_OK` after a job, and a heartbeat at most 15 s old), **booting**
 *    (neither yet, within `--boot-grace-min` of launch) and unable to serve (a `*_FAILED` signal,
 *    or silent past the boot grace: the reaper's to drain). Up to the minimum, ready instances are
 *    **kept**: those of the template's default version first, newest first (an outdated one is
 *    kept only while no current one can take its place; the reaper's rollout drains outdated idle
 *    instances, a few per run, and this task launches their replacements). The shortfall
 *    `minimum - kept - booting` is launched.
 * 3. **keep warm** ({@link keepWarm}): a kept instance whose threshold was never advertised, or
 *    has half its hold or less left, gets a conditional UpdateItem (only while the record is still
 *    idle, unclaimed and unchanged since the read: a claim in between wins, nothing else changes)
 *    setting `threshold = now + --warm-pool-hold-min` and `advertisedThreshold` to the same, then
 *    one message in its class's queue in provision's format (`id`, `resourceClass`,
 *    `instanceType`, `cpu`, `mmem`, `usageClass`, `threshold`). Instances above the minimum, and
 *    all of them outside the schedule, are left to expire and be reaped as before.
 * 4. **launch** ({@link launch}): per class short of its minimum, one CreateFleet (`instant`, the
 *    pool's template at `$Default`, one override per subnet with the class's vCPUs and memory as
 *    provision asks for them), tagged `InitialRunId=warm-<class>-<time>` (never a workflow run id,
 *    which is a number), `AllowSelfTermination=true` and the ownership tag; then each instance's
 *    record, written idle and unclaimed (`state=idle`, `runId=""`, `threshold = now + hold`).
 *    A launch is advertised only once a later run finds it ready. A failed launch (capacity,
 *    quota) is reported, the rest of the task still runs, and the next run tries again.
 *
 * Writes: UpdateItem and PutItem on instance records, SendMessageBatch, CreateFleet. Under
 * `--dry-run` it reads, and lists what it would keep warm and launch.
 *
 * @module
 */
import {
  CreateFleetCommand,
  type CreateFleetCommandInput,
  DescribeInstancesCommand,
  DescribeLaunchTemplatesCommand,
  type EC2Client,
  type FleetLaunchTemplateOverridesRequest,
  type Instance,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { SendMessageBatchCommand } from "npm:@aws-sdk/client-sqs@3.1169.0";
import {
  type DynamoDBDocumentClient,
  PutCommand,
  QueryCommand,
  UpdateCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { type Entity, idOf, item, METADATA, OWNER_TAG, pk, sha256, timestamp } from "./contract.ts";
import { type InputSpec, type Reader, show } from "./inputs.ts";
import { readMetadata } from "./metadata.ts";
import type { ResourceClass } from "./resource_pools.ts";
import { isTimestamp, TEMPLATE_ID_TAG, type TemplateDefault, versionOf } from "./rollout.ts";
import { hoursPerWeek, isWithin, parseSchedule, type Schedule } from "./schedule.ts";
import { type Change, describeError, type TaskContext, type TaskOutcome } from "./task.ts";

// ---------------------------------------------------------------------------------------------
// Inputs.

/** The warm pool's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "warm-pool",
    env: ["REFRESH_WARM_POOL"],
    kind: "string",
    help:
      'idle instances kept ready per resource class, CLASS=N[,CLASS=N…] (config file: also {"CLASS": N}); none by default',
  },
  {
    name: "warm-pool-schedule",
    env: ["REFRESH_WARM_POOL_SCHEDULE"],
    kind: "string",
    help:
      'when the warm pool is kept, windows "DAYS HH:MM-HH:MM [TIME_ZONE]" separated by ";" (default always); outside them the minimum is 0',
  },
  {
    name: "warm-pool-hold-min",
    env: ["REFRESH_WARM_POOL_HOLD_MIN"],
    kind: "int",
    default: "20",
    help:
      "minutes a run keeps a warm instance idle ahead (its threshold); longer than the interval between runs",
  },
  {
    name: "warm-pool-usage-class",
    env: ["REFRESH_WARM_POOL_USAGE_CLASS"],
    kind: "string",
    default: "spot",
    help: "spot or on-demand: how warm instances are bought (provision's usage class)",
  },
  {
    name: "warm-pool-instance-types",
    env: ["REFRESH_WARM_POOL_INSTANCE_TYPES"],
    kind: "list",
    help:
      "instance types warm instances may be (provision's allowed types, patterns like c6i.*); any with the class's CPU and memory by default",
  },
];

export type UsageClass = "spot" | "on-demand";

/** The warm pool's section of the desired state. */
export interface DesiredWarmPool {
  /** Instances kept ready per class; empty: no warm pool. */
  minimum: Record<string, number>;
  /** When the minimum applies; null: always. */
  schedule: Schedule | null;
  holdMin: number;
  usageClass: UsageClass;
  /** EC2 Fleet's AllowedInstanceTypes; empty: any type with the class's CPU and memory. */
  instanceTypes: string[];
}

/** The most instances one class may keep warm. */
export const MAX_WARM_PER_CLASS = 100;

/**
 * Reads the warm pool's inputs, recording problems on the reader. `classes` are the resource
 * classes of the desired state (undefined when they were invalid: then names are not checked).
 */
export function parseWarmPool(
  r: Reader,
  classes: Record<string, ResourceClass> | undefined,
): DesiredWarmPool {
  const minimum = parseMinimum(r.raw["warm-pool"], classes, r.problems);
  let schedule: Schedule | null = null;
  const scheduleText = r.string("warm-pool-schedule");
  if (scheduleText !== undefined) {
    const parsed = parseSchedule(scheduleText);
    if (Array.isArray(parsed)) r.problems.push(...parsed.map((p) => `warm-pool-schedule: ${p}`));
    else schedule = parsed;
    if (!r.has("warm-pool")) {
      r.problems.push(
        "warm-pool-schedule: given without --warm-pool; set the minimum per class it applies to",
      );
    }
  }
  const usageClass = r.string("warm-pool-usage-class") ?? "spot";
  if (usageClass !== "spot" && usageClass !== "on-demand") {
    r.problems.push(
      `warm-pool-usage-class: expected spot or on-demand, got ${JSON.stringify(usageClass)}`,
    );
  }
  const instanceTypes = r.list("warm-pool-instance-types") ?? [];
  for (const t of instanceTypes) {
    if (!/^[a-z0-9*.-]{1,30}$/.test(t)) {
      r.problems.push(
        `warm-pool-instance-types: ${
          JSON.stringify(t)
        } is not an instance type or pattern like c6i.large or m7i.*`,
      );
    }
  }
  return {
    minimum,
    schedule,
    holdMin: r.int("warm-pool-hold-min", 2, 24 * 60)!,
    usageClass: usageClass as UsageClass,
    instanceTypes,
  };
}

/** `large=2,xlarge=1` (commas or spaces), or in the config file also `{"large": 2}`. */
function parseMinimum(
  raw: unknown,
  classes: Record<string, ResourceClass> | undefined,
  problems: string[],
): Record<string, number> {
  const name = "warm-pool";
  const pairs: [string, unknown][] = [];
  if (raw === undefined) return {};
  if (typeof raw === "string") {
    for (const part of raw.split(/[\s,]+/).filter(Boolean)) {
      const m = /^([^=]+)=(.*)$/.exec(part);
      if (!m) {
        problems.push(`${name}: ${JSON.stringify(part)} is not CLASS=N (like large=2)`);
        continue;
      }
      pairs.push([m[1], m[2]]);
    }
    if (pairs.length === 0 && !problems.some((p) => p.startsWith(`${name}:`))) {
      problems.push(`${name}: expected CLASS=N[,CLASS=N…] (like large=2), got ${show(raw)}`);
    }
  } else if (typeof raw === "object" && raw !== null && !Array.isArray(raw)) {
    pairs.push(...Object.entries(raw));
  } else {
    problems.push(
      `${name}: expected CLASS=N[,CLASS=N…] or a JSON object {"CLASS": N}, got ${show(raw)}`,
    );
    return {};
  }
  const minimum: Record<string, number> = {};
  for (const [cls, value] of pairs) {
    const n = typeof value === "number"
      ? value
      : typeof value === "string" && /^\d+$/.test(value.trim())
      ? Number(value)
      : NaN;
    if (!Number.isSafeInteger(n) || n < 0 || n > MAX_WARM_PER_CLASS) {
      problems.push(
        `${name}: ${cls}=${
          typeof value === "string" ? value : show(value)
        } is not a whole number 0-${MAX_WARM_PER_CLASS}`,
      );
      continue;
    }
    if (classes && !(cls in classes)) {
      problems.push(
        `${name}: unknown resource class ${JSON.stringify(cls)}; expected one of ${
          Object.keys(classes).join(", ")
        } (--resource-class-config)`,
      );
      continue;
    }
    if (cls in minimum) {
      problems.push(`${name}: class ${JSON.stringify(cls)} is given more than once`);
      continue;
    }
    minimum[cls] = n;
  }
  return minimum;
}

/** Each class's minimum at `now`: as configured inside the schedule (or with none), else 0. */
export function minimumsAt(desired: DesiredWarmPool, now: Date): Record<string, number> {
  const inside = desired.schedule === null || isWithin(desired.schedule, now);
  return Object.fromEntries(
    Object.entries(desired.minimum).map(([cls, n]) => [cls, inside ? n : 0]),
  );
}

/** Instance-hours per day a class's minimum costs at most, averaged over a week. */
export function instanceHoursPerDay(minimum: number, schedule: Schedule | null): number {
  const hours = schedule === null ? 24 : hoursPerWeek(schedule) / 7;
  return Math.round(minimum * hours * 10) / 10;
}

// ---------------------------------------------------------------------------------------------
// The task.

/** Test hooks. */
export interface WarmPoolOptions {
  /** Awaited after the read, before the first write (tests put a claim here). */
  afterRead?: () => Promise<void>;
}

/** A heartbeat at most this old counts as fresh (provision's claim accepts 15 s). */
export const READY_HEARTBEAT_SEC = 15;
/** Signals after which an idle instance waits for a claim. */
const READY_SIGNALS = new Set(["UD_OK", "UD_REMOVE_REG_REMOVE_RUN_OK"]);
/** SendMessageBatch takes at most 10 messages. */
const MESSAGE_BATCH = 10;

/** The warm pool task: see the module documentation. */
export async function reconcileWarmPool(
  ctx: TaskContext,
  options: WarmPoolOptions = {},
): Promise<TaskOutcome> {
  const desired = ctx.desired.warmPool;
  if (Object.keys(desired.minimum).length === 0) {
    return { summary: "no warm pool (--warm-pool not set)", found: {}, changes: [] };
  }
  const now = new Date(Math.floor(ctx.now().getTime() / 1000) * 1000);
  const read = await readWarmState(ctx);
  const plan = planWarmPool({
    ...read,
    minimum: minimumsAt(desired, now),
    now,
    holdMs: desired.holdMin * 60_000,
    bootGraceMin: ctx.desired.reaper.rollout.bootGraceMin,
  });
  ctx.log.info(
    `warm-pool: ${
      Object.entries(plan.classes).map(([c, v]) =>
        `${c} ${v.ready} ready, ${v.booting} booting of ${v.minimum}`
      ).join("; ")
    }`,
  );
  await options.afterRead?.();
  const progress: Progress = { changes: [], warnings: [...plan.warnings], errors: [] };
  await keepWarm(ctx, read, plan, now, progress);
  await launch(ctx, read, plan, now, progress);
  return finish(ctx, plan, now, progress);
}

interface Progress {
  changes: Change[];
  warnings: string[];
  errors: string[];
}

// ---------------------------------------------------------------------------------------------
// 1. Read.

/** An instance record, as read: nothing but the id is trusted to have the contract's types. */
export interface WarmRecord {
  id: string;
  state: unknown;
  threshold: unknown;
  runId: unknown;
  resourceClass: unknown;
  instanceType: unknown;
  usageClass: unknown;
  updatedAt: unknown;
  advertisedThreshold: unknown;
}

/** What the warm pool reads. */
export interface WarmState {
  /** `resource_class_config` as provision reads it: cpu, mmem and queue URL per class. */
  classConfig: Record<string, { cpu?: unknown; mmem?: unknown; queueUrl?: unknown }>;
  subnetIds: string[];
  records: WarmRecord[];
  /** Heartbeat `updatedAt` by instance id. */
  heartbeats: Map<string, unknown>;
  /** Worker signal `value.state` by instance id. */
  signals: Map<string, unknown>;
  /** The pool's launch template (tagged for this table) and its default version; null: none. */
  template: TemplateDefault | null;
  /** Live instances tagged for this table: launch time and tags. */
  instances: Map<string, { launchTime?: string; imageId?: string; tags: Record<string, string> }>;
}

/** Phase 1: see the module documentation. */
export async function readWarmState(ctx: TaskContext): Promise<WarmState> {
  const { ddb, ec2 } = ctx.clients;
  const { table } = ctx.desired;
  const config = await readMetadata(ddb, table, METADATA.resourceClassConfig);
  const subnets = await readMetadata(ddb, table, METADATA.subnetIds);
  const template = await readTemplate(ec2, table, ctx.desired.launchTemplate.name);
  const records: WarmRecord[] = [];
  await queryAll(ddb, table, "INSTANCE", (i) =>
    records.push({
      id: idOf(String(i.SK)),
      state: i.state,
      threshold: i.threshold,
      runId: i.runId,
      resourceClass: i.resourceClass,
      instanceType: i.instanceType,
      usageClass: i.usageClass,
      updatedAt: i.updatedAt,
      advertisedThreshold: i.advertisedThreshold,
    }));
  const heartbeats = new Map<string, unknown>();
  await queryAll(ddb, table, "HEARTBEAT", (i) => heartbeats.set(idOf(String(i.SK)), i.updatedAt));
  const signals = new Map<string, unknown>();
  await queryAll(ddb, table, "WS", (i) => {
    const value = i.value as Record<string, unknown> | undefined;
    signals.set(idOf(String(i.SK)), typeof value === "object" ? value?.state : undefined);
  });
  return {
    classConfig: typeof config === "object" && config !== null
      ? config as WarmState["classConfig"]
      : {},
    subnetIds: Array.isArray(subnets) ? subnets.filter((s) => typeof s === "string") : [],
    records,
    heartbeats,
    signals,
    template,
    instances: await readInstances(ec2, table, template),
  };
}

async function queryAll(
  ddb: DynamoDBDocumentClient,
  table: string,
  entity: Entity,
  onItem: (item: Record<string, unknown>) => void,
): Promise<void> {
  let start: Record<string, unknown> | undefined;
  do {
    const out = await ddb.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: "PK = :pk",
        ExpressionAttributeValues: { ":pk": pk(entity) },
        ConsistentRead: true,
        ExclusiveStartKey: start,
      }),
    );
    for (const i of out.Items ?? []) onItem(i);
    start = out.LastEvaluatedKey;
  } while (start);
}

/** The template named `name` carrying this table's ownership tag, with its default version. */
async function readTemplate(
  ec2: EC2Client,
  table: string,
  name: string,
): Promise<TemplateDefault | null> {
  const out = await ec2.send(
    new DescribeLaunchTemplatesCommand({
      Filters: [
        { Name: `tag:${OWNER_TAG}`, Values: [table] },
        { Name: "launch-template-name", Values: [name] },
      ],
    }),
  );
  const t = out.LaunchTemplates?.[0];
  if (!t?.LaunchTemplateId || !t.DefaultVersionNumber) return null;
  // The AMI is not needed: instances launched from a template carry EC2's version tags.
  return { id: t.LaunchTemplateId, version: t.DefaultVersionNumber, ami: "" };
}

/**
 * Live instances proven the pool's as the reaper proves them: the ownership tag naming this
 * table, or EC2's own template tag naming the pool's template (provision's own instance tags can
 * replace the template's, ownership tag included).
 */
async function readInstances(
  ec2: EC2Client,
  table: string,
  template: TemplateDefault | null,
): Promise<WarmState["instances"]> {
  const instances: WarmState["instances"] = new Map();
  const proofs = [{ Name: `tag:${OWNER_TAG}`, Values: [table] }];
  if (template) proofs.push({ Name: `tag:${TEMPLATE_ID_TAG}`, Values: [template.id] });
  for (const proof of proofs) {
    let token: string | undefined;
    do {
      const out = await ec2.send(
        new DescribeInstancesCommand({
          Filters: [proof, { Name: "instance-state-name", Values: ["pending", "running"] }],
          MaxResults: 1000,
          NextToken: token,
        }),
      );
      for (const r of out.Reservations ?? []) {
        for (const i of r.Instances ?? []) {
          const owner = i.Tags?.find((t) => t.Key === OWNER_TAG)?.Value;
          // Tagged for another pool: that pool's, whatever template it came from.
          if (owner === undefined || owner === table) {
            instances.set(i.InstanceId!, describeInstance(i));
          }
        }
      }
      token = out.NextToken;
    } while (token);
  }
  return instances;
}

function describeInstance(i: Instance) {
  return {
    ...(i.LaunchTime ? { launchTime: timestamp(i.LaunchTime) } : {}),
    ...(i.ImageId ? { imageId: i.ImageId } : {}),
    tags: Object.fromEntries((i.Tags ?? []).map((t) => [t.Key ?? "", t.Value ?? ""])),
  };
}

// ---------------------------------------------------------------------------------------------
// 2. Plan.

/** An idle, unclaimed instance that can take a claim now. */
export interface ReadyInstance {
  id: string;
  resourceClass: string;
  /** As read: the keep-alive's condition requires both unchanged. */
  threshold: string;
  updatedAt: string | undefined;
  advertised: boolean;
  outdated: boolean;
  launchTime: string;
  instanceType: string;
  usageClass: string;
}

/** One class of the plan: what was found and what this run does. */
export interface WarmClass {
  /** The minimum now (0 outside the schedule). */
  minimum: number;
  /** Ready idle instances found (kept or not). */
  ready: number;
  booting: number;
  /** Of the ready ones, launched from another template version than the default. */
  outdated: number;
  /** Idle instances that cannot serve: a failed signal, or silent past the boot grace. */
  unhealthy: number;
  /** Ready instances kept (up to the minimum). */
  kept: ReadyInstance[];
  /** Of those, the ones whose threshold is renewed and advertised this run. */
  renew: ReadyInstance[];
  /** Ready instances above the minimum, left to expire. */
  extra: number;
  /** Instances to launch. */
  launch: number;
  /** Instances launched (and recorded) this run. */
  launched: number;
}

export interface WarmPlan {
  classes: Record<string, WarmClass>;
  warnings: string[];
}

export interface PlanInput extends Omit<WarmState, "classConfig" | "subnetIds"> {
  minimum: Record<string, number>;
  now: Date;
  holdMs: number;
  bootGraceMin: number;
}

/** Phase 2: see the module documentation. */
export function planWarmPool(input: PlanInput): WarmPlan {
  const { now } = input;
  const classes: Record<string, WarmClass> = {};
  const ready = new Map<string, ReadyInstance[]>();
  for (const [cls, minimum] of Object.entries(input.minimum)) {
    classes[cls] = {
      minimum,
      ready: 0,
      booting: 0,
      outdated: 0,
      unhealthy: 0,
      kept: [],
      renew: [],
      extra: 0,
      launch: 0,
      launched: 0,
    };
    ready.set(cls, []);
  }
  const warnings: string[] = [];
  for (const r of input.records) {
    const cls = typeof r.resourceClass === "string" ? r.resourceClass : undefined;
    const view = cls !== undefined ? classes[cls] : undefined;
    if (!view || r.state !== "idle" || r.runId !== "") continue;
    if (!isTimestamp(r.threshold) || Date.parse(r.threshold) <= now.getTime()) continue;
    const instance = input.instances.get(r.id);
    if (!instance) continue; // gone, or not proven the pool's: the reaper's to judge
    const signal = input.signals.get(r.id);
    if (typeof signal === "string" && signal.endsWith("_FAILED")) {
      view.unhealthy++;
      continue;
    }
    const beat = input.heartbeats.get(r.id);
    const fresh = isTimestamp(beat) &&
      Date.parse(beat) >= now.getTime() - READY_HEARTBEAT_SEC * 1000;
    if (fresh && typeof signal === "string" && READY_SIGNALS.has(signal)) {
      const version = input.template ? versionOf({ id: r.id, ...instance }, input.template) : null;
      ready.get(cls!)!.push({
        id: r.id,
        resourceClass: cls!,
        threshold: r.threshold,
        updatedAt: typeof r.updatedAt === "string" ? r.updatedAt : undefined,
        advertised: r.advertisedThreshold === r.threshold,
        outdated: version?.kind === "outdated",
        launchTime: instance.launchTime ?? "",
        instanceType: typeof r.instanceType === "string" ? r.instanceType : "",
        usageClass: typeof r.usageClass === "string" ? r.usageClass : "",
      });
      continue;
    }
    const launched = instance.launchTime ? Date.parse(instance.launchTime) : NaN;
    if (!(launched < now.getTime() - input.bootGraceMin * 60_000)) view.booting++;
    else view.unhealthy++;
  }
  for (const [cls, view] of Object.entries(classes)) {
    const list = ready.get(cls)!;
    // Current versions first, then the newest launches (they live longest), the id breaking ties.
    list.sort((a, b) =>
      Number(a.outdated) - Number(b.outdated) || b.launchTime.localeCompare(a.launchTime) ||
      a.id.localeCompare(b.id)
    );
    view.ready = list.length;
    view.outdated = list.filter((i) => i.outdated).length;
    view.kept = list.slice(0, view.minimum);
    view.extra = list.length - view.kept.length;
    view.renew = view.kept.filter((i) =>
      !i.advertised || Date.parse(i.threshold) - now.getTime() <= input.holdMs / 2
    );
    view.launch = Math.max(0, view.minimum - view.kept.length - view.booting);
  }
  return { classes, warnings };
}

// ---------------------------------------------------------------------------------------------
// 3. Keep warm.

/** A pool message, exactly as fleet-actions' provision reads it from a class's queue. */
export interface PoolMessage {
  id: string;
  resourceClass: string;
  instanceType: string;
  cpu: number;
  mmem: number;
  usageClass: string;
  threshold: string;
}

/** Phase 3: see the module documentation. */
async function keepWarm(
  ctx: TaskContext,
  read: WarmState,
  plan: WarmPlan,
  now: Date,
  progress: Progress,
): Promise<void> {
  const threshold = timestamp(new Date(now.getTime() + ctx.desired.warmPool.holdMin * 60_000));
  for (const [cls, view] of Object.entries(plan.classes)) {
    if (view.renew.length === 0) continue;
    const spec = classSpec(ctx, read, cls);
    if (typeof spec === "string") {
      progress.errors.push(`${cls}: ${spec}`);
      continue;
    }
    const messages: PoolMessage[] = [];
    for (const instance of view.renew) {
      const message: PoolMessage = {
        id: instance.id,
        resourceClass: cls,
        instanceType: instance.instanceType,
        cpu: spec.cpu,
        mmem: spec.mmem,
        usageClass: instance.usageClass,
        threshold,
      };
      if (ctx.dryRun) {
        progress.changes.push(keepChange(instance, threshold, spec.queueUrl));
        continue;
      }
      try {
        if (await renew(ctx, instance, threshold, now)) {
          messages.push(message);
          progress.changes.push(keepChange(instance, threshold, spec.queueUrl));
        } else {
          progress.warnings.push(
            `${instance.id} changed after it was read (claimed, most likely): not kept warm`,
          );
        }
      } catch (error) {
        progress.errors.push(`keeping ${instance.id} warm failed: ${describeError(error)}`);
      }
    }
    await advertise(ctx, spec.queueUrl, messages, progress);
  }
}

function keepChange(instance: ReadyInstance, threshold: string, queueUrl: string): Change {
  return {
    action: "keep warm",
    target: `instance ${instance.id}`,
    detail: `${instance.resourceClass}, threshold ${instance.threshold} -> ${threshold}` +
      `${instance.outdated ? " (an older template version)" : ""}; advertised in ${
        queueUrl.split("/").pop()
      }`,
  };
}

/** cpu, mmem and queue URL of a class as the table holds them (what provision compares). */
function classSpec(
  ctx: TaskContext,
  read: WarmState,
  cls: string,
): { cpu: number; mmem: number; queueUrl: string } | string {
  const stored = read.classConfig[cls];
  const { cpu, mmem, queueUrl } = stored ?? {};
  if (typeof queueUrl !== "string" || queueUrl === "") {
    return `the table's resource_class_config has no queue for class ${cls} (the resource-pools task writes it); nothing advertised or launched`;
  }
  const wanted = ctx.desired.pools.classes[cls];
  return {
    cpu: typeof cpu === "number" ? cpu : wanted.cpu,
    mmem: typeof mmem === "number" ? mmem : wanted.mmem,
    queueUrl,
  };
}

/**
 * The keep-alive: a new threshold, advertised, only while the record is idle, unclaimed and
 * unchanged since the read. False when that condition failed (another writer won).
 */
async function renew(
  ctx: TaskContext,
  instance: ReadyInstance,
  threshold: string,
  now: Date,
): Promise<boolean> {
  const values: Record<string, unknown> = {
    ":idle": "idle",
    ":none": "",
    ":read": instance.threshold,
    ":now": timestamp(now),
    ":new": threshold,
  };
  let unchanged = "attribute_not_exists(updatedAt)";
  if (instance.updatedAt !== undefined) {
    unchanged = "updatedAt = :updated";
    values[":updated"] = instance.updatedAt;
  }
  try {
    await ctx.clients.ddb.send(
      new UpdateCommand({
        TableName: ctx.desired.table,
        Key: { PK: pk("INSTANCE"), SK: `ID#${instance.id}` },
        ConditionExpression:
          `#state = :idle AND runId = :none AND #threshold = :read AND #threshold > :now AND ${unchanged}`,
        UpdateExpression: "SET #threshold = :new, advertisedThreshold = :new, updatedAt = :now",
        ExpressionAttributeNames: { "#state": "state", "#threshold": "threshold" },
        ExpressionAttributeValues: values,
      }),
    );
    return true;
  } catch (error) {
    if ((error as Error).name === "ConditionalCheckFailedException") return false;
    throw error;
  }
}

/**
 * One message per renewed instance, 10 per SendMessageBatch. A message that could not be sent
 * leaves its record marked as not advertised, so the next run sends it again.
 */
async function advertise(
  ctx: TaskContext,
  queueUrl: string,
  messages: PoolMessage[],
  progress: Progress,
): Promise<void> {
  for (let i = 0; i < messages.length; i += MESSAGE_BATCH) {
    const batch = messages.slice(i, i + MESSAGE_BATCH);
    let failed: { id: string; why: string }[];
    try {
      const out = await ctx.clients.sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: batch.map((m, n) => ({ Id: String(n), MessageBody: JSON.stringify(m) })),
        }),
      );
      failed = (out.Failed ?? []).map((f) => ({
        id: batch[Number(f.Id)].id,
        why: `${f.Code}: ${f.Message ?? ""}`,
      }));
    } catch (error) {
      failed = batch.map((m) => ({ id: m.id, why: describeError(error) }));
    }
    for (const f of failed) {
      progress.errors.push(`advertising ${f.id} in ${queueUrl} failed: ${f.why}`);
      const message = batch.find((m) => m.id === f.id)!;
      await unmark(ctx, message).catch(() => {});
    }
  }
}

/** Marks a record as not advertised (only if its threshold is still the one just set). */
async function unmark(ctx: TaskContext, message: PoolMessage): Promise<void> {
  await ctx.clients.ddb.send(
    new UpdateCommand({
      TableName: ctx.desired.table,
      Key: { PK: pk("INSTANCE"), SK: `ID#${message.id}` },
      ConditionExpression: "advertisedThreshold = :t",
      UpdateExpression: "REMOVE advertisedThreshold",
      ExpressionAttributeValues: { ":t": message.threshold },
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// 4. Launch.

/** The InitialRunId of warm instances: never a workflow run id (those are numbers). */
export function warmRunId(resourceClass: string, now: Date): string {
  const time = timestamp(now).replace(/[-:]/g, "");
  return `warm-${resourceClass}-${time}`.slice(0, 128);
}

/** Phase 4: see the module documentation. */
async function launch(
  ctx: TaskContext,
  read: WarmState,
  plan: WarmPlan,
  now: Date,
  progress: Progress,
): Promise<void> {
  const short = Object.entries(plan.classes).filter(([, v]) => v.launch > 0);
  if (short.length === 0) return;
  const name = ctx.desired.launchTemplate.name;
  if (read.template === null) {
    progress.errors.push(
      `cannot launch: no launch template ${name} tagged ${OWNER_TAG}=${ctx.desired.table} (the launch-template task makes it)`,
    );
    return;
  }
  if (read.subnetIds.length === 0) {
    progress.errors.push(
      "cannot launch: the table holds no subnet_ids (the parameters task writes them)",
    );
    return;
  }
  for (const [cls, view] of short) {
    const spec = classSpec(ctx, read, cls);
    if (typeof spec === "string") {
      progress.errors.push(`${cls}: ${spec}`);
      continue;
    }
    const input = fleetRequest(ctx, read.template, read.subnetIds, cls, spec, view.launch, now);
    if (ctx.dryRun) {
      progress.changes.push({
        action: "launch",
        target: `${view.launch} ${cls} instance${view.launch === 1 ? "" : "s"}`,
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
  ctx: TaskContext,
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
  ctx: TaskContext,
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

// ---------------------------------------------------------------------------------------------
// Outcome and view.

/** One class as the reports show it. */
export interface WarmClassView {
  minimum: number;
  ready: number;
  booting: number;
  launched: number;
  outdated: number;
  unhealthy: number;
  extra: number;
  /** The configured minimum's instance-hours per day (averaged over a week), for the cost. */
  instanceHoursPerDay: number;
}

/** The warm pool view (`found.warm`). */
export interface WarmView {
  schedule: string | null;
  inSchedule: boolean;
  classes: Record<string, WarmClassView>;
}

function finish(ctx: TaskContext, plan: WarmPlan, now: Date, progress: Progress): TaskOutcome {
  const desired = ctx.desired.warmPool;
  const view: WarmView = {
    schedule: desired.schedule?.text ?? null,
    inSchedule: desired.schedule === null || isWithin(desired.schedule, now),
    classes: Object.fromEntries(
      Object.entries(plan.classes).map(([cls, c]) => [cls, {
        minimum: c.minimum,
        ready: c.ready,
        booting: c.booting,
        launched: ctx.dryRun ? c.launch : c.launched,
        outdated: c.outdated,
        unhealthy: c.unhealthy,
        extra: c.extra,
        instanceHoursPerDay: instanceHoursPerDay(desired.minimum[cls], desired.schedule),
      }]),
    ),
  };
  const kept = progress.changes.filter((c) => c.action === "keep warm").length;
  const launched = Object.values(view.classes).reduce((n, c) => n + c.launched, 0);
  const would = ctx.dryRun ? "would be " : "";
  const parts = [
    kept && `${kept} kept warm${ctx.dryRun ? " (planned)" : ""}`,
    launched && `${launched} ${would}launched`,
    !view.inSchedule && "outside the schedule: minimum 0",
  ].filter(Boolean);
  const ready = Object.values(view.classes).reduce((n, c) => n + c.ready, 0);
  const summary = parts.length
    ? parts.join(", ")
    : `warm: ${ready} ready, nothing to do${view.inSchedule ? "" : " (outside the schedule)"}`;
  if (progress.errors.length) {
    const more = progress.errors.length > 3 ? ` (and ${progress.errors.length - 3} more)` : "";
    throw new Error(
      `${summary}; ${progress.errors.length} operations failed: ${
        progress.errors.slice(0, 3).join("; ")
      }${more}`,
    );
  }
  return { summary, found: { warm: view }, changes: progress.changes, warnings: progress.warnings };
}

/** Whether a task's `found.warm` is a warm pool view (the reports render it as a table). */
export function isWarmView(value: unknown): value is WarmView {
  return typeof value === "object" && value !== null && "classes" in value &&
    "inSchedule" in value;
}

/** The warm pool view as table rows: a header, then one row per class. */
export function warmTable(view: WarmView): string[][] {
  const header = ["class", "minimum", "ready", "booting", "launched", "outdated", "h/day"];
  const rows = Object.entries(view.classes).map(([name, c]) => [
    name,
    String(c.minimum),
    String(c.ready),
    String(c.booting),
    String(c.launched),
    String(c.outdated),
    String(c.instanceHoursPerDay),
  ]);
  return [header, ...rows];
}

/** What the warm pool view is about, in words. */
export function warmLine(view: WarmView): string {
  return view.schedule === null
    ? "warm pool, always kept"
    : `warm pool, schedule ${view.schedule}: ${view.inSchedule ? "inside" : "outside (minimum 0)"}`;
}
