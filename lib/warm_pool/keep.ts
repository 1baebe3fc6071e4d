/**
 * Phase 3 of the warm pool: keeps ready instances warm. Writes a conditional UpdateItem per
 * renewed record (threshold and `advertisedThreshold`) and SendMessageBatch to the class's queue.
 *
 * @module
 */
import { SendMessageBatchCommand } from "npm:@aws-sdk/client-sqs@3.1169.0";
import { UpdateCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { pk, timestamp } from "../contract.ts";
import { type Change, describeError } from "../task.ts";
import type { Progress, WarmContext } from "./context.ts";
import { classSpec, type WarmState } from "./read.ts";
import type { ReadyInstance, WarmPlan } from "./plan.ts";

/** SendMessageBatch takes at most 10 messages. */
const MESSAGE_BATCH = 10;

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
export async function keepWarm(
  ctx: WarmContext,
  read: WarmState,
  plan: WarmPlan,
  now: Date,
  progress: Progress,
): Promise<void> {
  const threshold = timestamp(new Date(now.getTime() + ctx.desired.warmPool.holdMin * 60_000));
  for (const [key, view] of Object.entries(plan.classes)) {
    if (view.renew.length === 0) continue;
    const spec = classSpec(ctx, read, view.cls);
    if (typeof spec === "string") {
      progress.errors.push(`${key}: ${spec}`);
      continue;
    }
    const messages: PoolMessage[] = [];
    for (const instance of view.renew) {
      const message: PoolMessage = {
        id: instance.id,
        resourceClass: view.cls,
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

/**
 * The keep-alive: a new threshold, advertised, only while the record is idle, unclaimed and
 * unchanged since the read. False when that condition failed (another writer won).
 */
async function renew(
  ctx: WarmContext,
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
  ctx: WarmContext,
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
async function unmark(ctx: WarmContext, message: PoolMessage): Promise<void> {
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
