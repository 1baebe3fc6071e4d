/**
 * Phase 1 of the warm pool: reads what provision reads (`resource_class_config`, `subnet_ids`),
 * every instance record, heartbeat and worker signal, the pool's launch template, the live
 * instances of the idle records (by id: never a listing of the pool), and the spot capacity
 * shortages earlier runs remembered. Writes nothing.
 *
 * @module
 */
import {
  DescribeLaunchTemplatesCommand,
  type EC2Client,
  type Instance,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { ResourceNotFoundException } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import {
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { type Entity, idOf, METADATA, OWNER_TAG, pk, timestamp } from "../contract.ts";
import { readMetadata } from "../metadata.ts";
import type { TemplateDefault } from "../rollout.ts";
import { describeIds, ownership } from "../reaper/reads.ts";
import type { WarmContext } from "./context.ts";

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
  /** "spot" on an on-demand instance launched in place of a spot one (capacity was short). */
  fallbackFrom: unknown;
  /** Set by an instance that withdrew itself on an interruption notice (why, and when). */
  interruption: unknown;
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
  /** Spot capacity shortages remembered by earlier runs, by warm pool key. */
  shortages: Shortages;
}

/** Remembered spot capacity shortages by warm pool key: until when, and what EC2 said. */
export type Shortages = Record<string, { until: string; why: string }>;

/** Phase 1: see the module documentation. */
export async function readWarmState(ctx: WarmContext): Promise<WarmState> {
  const { ddb, ec2 } = ctx.clients;
  const { table } = ctx.desired;
  // Under --dry-run on a new account the table may not exist yet: then nothing is in it.
  const table$ = <T>(read: Promise<T>, empty: T) =>
    read.catch((error) => {
      if (ctx.dryRun && error instanceof ResourceNotFoundException) return empty;
      throw error;
    });
  const records: WarmRecord[] = [];
  const heartbeats = new Map<string, unknown>();
  const signals = new Map<string, unknown>();
  // Side by side: the table's reads, and EC2's (the instances once the template is known).
  const [config, subnets, template, shortages] = await Promise.all([
    table$(readMetadata(ddb, table, METADATA.resourceClassConfig), undefined),
    table$(readMetadata(ddb, table, METADATA.subnetIds), undefined),
    readTemplate(ec2, table, ctx.desired.launchTemplate.name),
    table$(readShortages(ddb, table), {}),
    table$(
      queryAll(ddb, table, "INSTANCE", (i) =>
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
          fallbackFrom: i.fallbackFrom,
          interruption: i.interruption,
        })),
      undefined,
    ),
    table$(
      queryAll(ddb, table, "HEARTBEAT", (i) => heartbeats.set(idOf(String(i.SK)), i.updatedAt)),
      undefined,
    ),
    table$(
      queryAll(ddb, table, "WS", (i) => {
        const value = i.value as Record<string, unknown> | undefined;
        signals.set(idOf(String(i.SK)), typeof value === "object" ? value?.state : undefined);
      }),
      undefined,
    ),
  ]);
  return {
    classConfig: typeof config === "object" && config !== null
      ? config as WarmState["classConfig"]
      : {},
    subnetIds: Array.isArray(subnets) ? subnets.filter((s) => typeof s === "string") : [],
    records,
    heartbeats,
    signals,
    template,
    instances: await readInstances(ec2, table, template, candidates(records, ctx.now())),
    shortages,
  };
}

/**
 * The records whose instance can count as warm (idle, unclaimed, unexpired) or as interrupted
 * (withdrawn on a notice, its record expired at once).
 */
function candidates(records: WarmRecord[], now: Date): string[] {
  return records.filter((r) =>
    r.state === "idle" && r.runId === "" && typeof r.threshold === "string" &&
    (Date.parse(r.threshold) > now.getTime() - 1000 || typeof r.interruption === "string")
  ).map((r) => r.id);
}

/** Where the remembered shortages are: an item only refresh reads (see the data contract). */
export const SHORTAGES_KEY = { PK: "TYPE#REFRESH", SK: "ID#capacity_shortages" } as const;

async function readShortages(ddb: DynamoDBDocumentClient, table: string): Promise<Shortages> {
  const out = await ddb.send(new GetCommand({ TableName: table, Key: SHORTAGES_KEY }));
  const value = out.Item?.value;
  const shortages: Shortages = {};
  if (typeof value !== "object" || value === null) return shortages;
  for (const [key, entry] of Object.entries(value as Record<string, unknown>)) {
    const { until, why } = (entry ?? {}) as { until?: unknown; why?: unknown };
    if (typeof until === "string") {
      shortages[key] = { until, why: typeof why === "string" ? why : "" };
    }
  }
  return shortages;
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
 * The live instances among `ids` (described by id, never a listing of the pool), proven the
 * pool's as the reaper proves them: the ownership tag naming this table, or EC2's own template
 * tag naming the pool's template (provision's own instance tags can replace the template's,
 * ownership tag included).
 */
async function readInstances(
  ec2: EC2Client,
  table: string,
  template: TemplateDefault | null,
  ids: string[],
): Promise<WarmState["instances"]> {
  const instances: WarmState["instances"] = new Map();
  const templateIds = new Set(template ? [template.id] : []);
  for (const i of await describeIds(ec2, ids)) {
    if (!["pending", "running"].includes(i.State?.Name ?? "")) continue;
    if (ownership(i, table, templateIds)) instances.set(i.InstanceId!, describeInstance(i));
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

/** cpu, mmem and queue URL of a class as the table holds them (what provision compares). */
export function classSpec(
  ctx: WarmContext,
  read: WarmState,
  cls: string,
): { cpu: number; mmem: number; queueUrl: string } | string {
  const stored = read.classConfig[cls];
  const { cpu, mmem, queueUrl } = stored ?? {};
  if (typeof queueUrl !== "string" || queueUrl === "") {
    return `the table's resource_class_config has no queue for class ${cls} (the resource-pools task writes it)`;
  }
  const wanted = ctx.desired.pools.classes[cls];
  return {
    cpu: typeof cpu === "number" ? cpu : wanted.cpu,
    mmem: typeof mmem === "number" ? mmem : wanted.mmem,
    queueUrl,
  };
}
