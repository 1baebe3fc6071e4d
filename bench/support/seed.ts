/**
 * Seeding a pool at scale for the benches: instances launched from a launch template in batches,
 * their records (instance, heartbeat, worker signal) written 25 to a batch, and the records
 * counted. Writes only what a caller asks for, to the clients it is given.
 *
 * @module
 */
import {
  type EC2Client,
  RunInstancesCommand,
  type RunInstancesCommandInput,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import {
  BatchWriteCommand,
  type DynamoDBDocumentClient,
  QueryCommand,
  type QueryCommandInput,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, timestamp } from "../../lib/contract.ts";

/** Runs `fn` on every item, at most `limit` at a time. */
export async function forEachLimit<T>(
  items: T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: limit }, worker));
}

/** `items` in slices of `size` (the last one shorter). */
export function chunks<T>(items: T[], size: number): T[][] {
  return Array.from(
    { length: Math.ceil(items.length / size) },
    (_, i) => items.slice(i * size, (i + 1) * size),
  );
}

/** Puts every item into `table`, 25 to a BatchWriteItem, 8 at a time, until none is unprocessed. */
export async function putItems(
  ddb: DynamoDBDocumentClient,
  table: string,
  items: Record<string, unknown>[],
): Promise<void> {
  await forEachLimit(chunks(items, 25), 8, async (batch) => {
    let pending = batch.map((Item) => ({ PutRequest: { Item } }));
    while (pending.length) {
      const out = await ddb.send(new BatchWriteCommand({ RequestItems: { [table]: pending } }));
      pending = (out.UnprocessedItems?.[table] ?? []) as typeof pending;
    }
  });
}

/**
 * Launches `count` instances with `request` (its launch template, say), 500 to a RunInstances, 4
 * at a time; with `subnets`, each call takes the next subnet in turn. Returns the instance ids.
 */
export async function launchInstances(
  ec2: EC2Client,
  count: number,
  request: Omit<RunInstancesCommandInput, "MinCount" | "MaxCount">,
  subnets: string[] = [],
): Promise<string[]> {
  const ids: string[] = [];
  let launched = 0;
  await forEachLimit(chunks(Array.from({ length: count }), 500), 4, async (batch) => {
    const subnet = subnets.length ? { SubnetId: subnets[launched++ % subnets.length] } : {};
    const out = await ec2.send(
      new RunInstancesCommand({
        ...request,
        ...subnet,
        MinCount: batch.length,
        MaxCount: batch.length,
      }),
    );
    ids.push(...out.Instances!.map((i) => i.InstanceId!));
  });
  return ids;
}

/**
 * The records of instances `ids` at `now`: an instance record, a heartbeat and a worker signal
 * each. The first `expired` are idle past their threshold (an hour ago); the rest are live (their
 * threshold an hour ahead), idle at even positions in `ids` and running at odd ones.
 */
export function instanceRecords(
  ids: string[],
  expired: number,
  now: Date,
): Record<string, unknown>[] {
  return ids.flatMap((id, i) => {
    const state = i < expired ? "idle" : i % 2 ? "running" : "idle";
    const threshold = timestamp(new Date(now.getTime() + (i < expired ? -3600_000 : 3600_000)));
    const runId = state === "running" ? `run-${i}` : "";
    return [
      item("INSTANCE", id, now, {
        state,
        threshold,
        runId,
        resourceClass: "large",
        instanceType: "t3.micro",
        usageClass: "on-demand",
      }),
      item("HEARTBEAT", id, now, { value: "PING" }),
      item("WS", id, now, { value: { state, runId } }),
    ];
  });
}

/**
 * How many instance records `table` holds, every page counted; `filter` narrows them (a
 * FilterExpression with its names and values, `:pk` taken).
 */
export async function countInstanceRecords(
  ddb: DynamoDBDocumentClient,
  table: string,
  filter: Pick<
    QueryCommandInput,
    "FilterExpression" | "ExpressionAttributeNames" | "ExpressionAttributeValues"
  > = {},
): Promise<number> {
  let count = 0;
  let start: Record<string, unknown> | undefined;
  do {
    const out = await ddb.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: "PK = :pk",
        ...filter,
        ExpressionAttributeValues: { ...filter.ExpressionAttributeValues, ":pk": "TYPE#INSTANCE" },
        Select: "COUNT",
        ExclusiveStartKey: start,
      }),
    );
    count += out.Count ?? 0;
    start = out.LastEvaluatedKey;
  } while (start);
  return count;
}
