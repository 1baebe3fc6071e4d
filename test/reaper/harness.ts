/**
 * What the reaper's tests share: a context on a fresh table, launching and seeding pool
 * instances, and reading back what EC2 and the table hold.
 */
import assert from "node:assert/strict";
import {
  CreateLaunchTemplateCommand,
  DescribeInstancesCommand,
  type EC2Client,
  ModifyInstanceAttributeCommand,
  RunInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import {
  BatchWriteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, OWNER_TAG, timestamp } from "../../lib/contract.ts";
import type { ReaperCounts } from "../../lib/reaper.ts";
import { reconcileTable } from "../../lib/table.ts";
import type { FakeGithub } from "../support/github.ts";
import { type TestContext, testContext } from "../support/aws.ts";

export const TABLE = "acme-widgets-ci-table";
export const AMI = "ami-1e749f67";
export const MIN = 60_000;

/**
 * A context for the reaper on a fresh table, with GitHub pointed at the fake server; the clock is
 * an hour past the real one (moto stamps launch times with the real clock).
 */
/**
 * A reaper context on a fresh table, its clock an hour ahead. The reaper lists the whole pool
 * every run (`--sweep always`) unless `args` say otherwise: these tests judge what a listing
 * finds; test/reaper/sweep_test.ts judges the targeted runs between sweeps.
 */
export async function setup(gh: FakeGithub, args: string[] = []): Promise<TestContext> {
  const sweep = args.includes("--sweep") ? [] : ["--sweep", "always"];
  const ctx = await testContext([
    "--only",
    "reaper",
    "--github-api-url",
    gh.url,
    ...sweep,
    ...args,
  ]);
  await reconcileTable({ ...ctx, dryRun: false });
  ctx.setNow(new Date(Date.now() + 60 * MIN));
  ctx.counter.reset();
  return ctx;
}

/** Launches instances in moto, tagged as the pool's unless `tagged` is false. */
export async function launch(ctx: TestContext, count: number, tagged = true): Promise<string[]> {
  const out = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      ImageId: AMI,
      MinCount: count,
      MaxCount: count,
      InstanceType: "t3.micro",
      ...(tagged
        ? {
          TagSpecifications: [{
            ResourceType: "instance",
            Tags: [{ Key: OWNER_TAG, Value: TABLE }],
          }],
        }
        : {}),
    }),
  );
  return out.Instances!.map((i) => i.InstanceId!);
}

export function at(ctx: TestContext, minutes: number): string {
  return timestamp(new Date(ctx.now().getTime() + minutes * MIN));
}

/**
 * Writes an instance record (written `updatedMin` ago) with its worker signal and a heartbeat
 * (fresh: a live instance beats every 5 s).
 */
export async function seed(
  ctx: TestContext,
  id: string,
  state: string,
  thresholdMin: number,
  runId = "",
  updatedMin = -30,
): Promise<void> {
  const updated = new Date(ctx.now().getTime() + updatedMin * MIN);
  const put = (
    entity: "INSTANCE" | "HEARTBEAT" | "WS",
    attributes: Record<string, unknown>,
    at = updated,
  ) =>
    ctx.clients.ddb.send(
      new PutCommand({ TableName: TABLE, Item: item(entity, id, at, attributes) }),
    );
  await put("INSTANCE", {
    state,
    threshold: at(ctx, thresholdMin),
    runId,
    resourceClass: "large",
    instanceType: "t3.micro",
    usageClass: "on-demand",
  });
  await put("HEARTBEAT", { value: "PING" }, ctx.now());
  await put("WS", { value: { state, runId } });
}

export async function ec2States(ec2: EC2Client, ids: string[]): Promise<Record<string, string>> {
  const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }));
  return Object.fromEntries(
    out.Reservations!.flatMap((r) => r.Instances!).map((i) => [i.InstanceId!, i.State!.Name!]),
  );
}

/** The ids stored under an entity. */
export async function stored(ctx: TestContext, entity: string): Promise<string[]> {
  const out = await ctx.clients.ddb.send(
    new QueryCommand({
      TableName: TABLE,
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: { ":pk": `TYPE#${entity}` },
    }),
  );
  return out.Items!.map((i) => i.identifier).sort();
}

export async function record(ctx: TestContext, id: string) {
  const out = await ctx.clients.ddb.send(
    new GetCommand({ TableName: TABLE, Key: { PK: "TYPE#INSTANCE", SK: `ID#${id}` } }),
  );
  return out.Item;
}

/** Records the instance ids of every TerminateInstances call. */
export function watchTerminations(ctx: TestContext): string[][] {
  const calls: string[][] = [];
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "TerminateInstancesCommand") {
        calls.push([...(args.input as { InstanceIds: string[] }).InstanceIds]);
      }
      return next(args);
    },
    { step: "initialize", name: "watchTerminations" },
  );
  return calls;
}

export const counts = (found: Record<string, unknown>) => found as unknown as ReaperCounts;
export const sorted = (ids: string[]) => [...ids].sort();

/** The first update above must be the raced one: lock one record at a time. */
export function withConcurrency(ctx: TestContext, concurrency: number): TestContext {
  const desired = { ...ctx.desired, reaper: { ...ctx.desired.reaper, concurrency } };
  return { ...ctx, desired };
}

export async function ec2LaunchTimes(
  ec2: EC2Client,
  ids: string[],
): Promise<Record<string, number>> {
  const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }));
  return Object.fromEntries(
    out.Reservations!.flatMap((r) => r.Instances!).map((
      i,
    ) => [i.InstanceId!, i.LaunchTime!.getTime()]),
  );
}

export async function ec2RunProtected(ctx: TestContext): Promise<string[]> {
  const out = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      ImageId: AMI,
      MinCount: 1,
      MaxCount: 1,
      TagSpecifications: [{ ResourceType: "instance", Tags: [{ Key: OWNER_TAG, Value: TABLE }] }],
    }),
  );
  const id = out.Instances![0].InstanceId!;
  await ctx.clients.ec2.send(
    new ModifyInstanceAttributeCommand({ InstanceId: id, DisableApiTermination: { Value: true } }),
  );
  return [id];
}

/** Launches an instance tagged as another pool's. */
export async function launchForeignPool(ctx: TestContext): Promise<string> {
  const out = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      ImageId: AMI,
      MinCount: 1,
      MaxCount: 1,
      TagSpecifications: [{
        ResourceType: "instance",
        Tags: [{ Key: OWNER_TAG, Value: "other-pool-ci-table" }],
      }],
    }),
  );
  return out.Instances![0].InstanceId!;
}

/** A launch template of the pool (tagged as the pool's) whose instances get no tag of their own. */
export async function untaggingTemplate(
  ctx: TestContext,
  name: string,
  owned = true,
): Promise<string> {
  const out = await ctx.clients.ec2.send(
    new CreateLaunchTemplateCommand({
      LaunchTemplateName: name,
      LaunchTemplateData: { ImageId: AMI, InstanceType: "t3.micro" },
      ...(owned
        ? {
          TagSpecifications: [{
            ResourceType: "launch-template",
            Tags: [{ Key: OWNER_TAG, Value: TABLE }],
          }],
        }
        : {}),
    }),
  );
  return out.LaunchTemplate!.LaunchTemplateId!;
}

export async function launchFrom(
  ctx: TestContext,
  templateId: string,
  count: number,
): Promise<string[]> {
  const out = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      LaunchTemplate: { LaunchTemplateId: templateId },
      MinCount: count,
      MaxCount: count,
    }),
  );
  for (const instance of out.Instances!) {
    assert.ok(!instance.Tags?.some((t) => t.Key === OWNER_TAG), "launched without the tag");
  }
  return out.Instances!.map((i) => i.InstanceId!);
}

/** Writes instance records (with heartbeat and worker signal) in batches. */
export async function putRecords(ctx: TestContext, ids: string[], state: string): Promise<void> {
  const updated = new Date(ctx.now().getTime() - 30 * MIN);
  const items = ids.flatMap((id) => [
    item("INSTANCE", id, updated, { state, threshold: at(ctx, -30), runId: "" }),
    item("HEARTBEAT", id, updated, { value: "PING" }),
    item("WS", id, updated, { value: { state, runId: "" } }),
  ]);
  for (let i = 0; i < items.length; i += 25) {
    await ctx.clients.ddb.send(
      new BatchWriteCommand({
        RequestItems: { [TABLE]: items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } })) },
      }),
    );
  }
}

/** Records the keys (`ENTITY id`) of every BatchWriteItem call, in order. */
export function watchBatchWrites(ctx: TestContext): string[][] {
  const calls: string[][] = [];
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "BatchWriteItemCommand") {
        const input = args.input as {
          RequestItems: Record<string, { DeleteRequest: { Key: { PK: string; SK: string } } }[]>;
        };
        calls.push(
          input.RequestItems[TABLE].map(({ DeleteRequest: { Key } }) =>
            `${Key.PK.slice(5)} ${Key.SK.slice(3)}`
          ),
        );
      }
      return next(args);
    },
    { step: "initialize", name: "watchBatchWrites" },
  );
  return calls;
}

/** The EC2 calls made from now on: each command's name (without "Command") and its input. */
export function watchEc2(ctx: TestContext): { name: string; input: Record<string, unknown> }[] {
  const calls: { name: string; input: Record<string, unknown> }[] = [];
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      const name = String(context.commandName).replace(/Command$/, "");
      calls.push({ name, input: structuredClone(args.input as Record<string, unknown>) });
      return next(args);
    },
    { step: "initialize", name: "watchEc2" },
  );
  return calls;
}

/** How many filter values an EC2 request carries, over all its filters. */
export function filterValues(input: Record<string, unknown>): number {
  const filters = (input.Filters ?? []) as { Values?: string[] }[];
  return filters.reduce((n, f) => n + (f.Values?.length ?? 0), 0);
}
