/**
 * Reads and writes `TYPE#METADATA` records, writing only when the stored value differs from the
 * desired one. Every initializer records what it reconciled through here.
 *
 * @module
 */
import { isDeepStrictEqual } from "node:util";
import { GetCommand, PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { ResourceNotFoundException } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import type { DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, pk, sk } from "./contract.ts";
import type { Change, SharedDesired, TaskContext as Context } from "./task.ts";

/** What the metadata helpers need of a task's context: the table. */
type TaskContext = Context<Pick<SharedDesired, "table">>;

/** The stored `value` of a metadata record, or undefined when there is none. */
export async function readMetadata(
  ddb: DynamoDBDocumentClient,
  table: string,
  id: string,
): Promise<unknown> {
  const out = await ddb.send(
    new GetCommand({
      TableName: table,
      Key: { PK: pk("METADATA"), SK: sk(id) },
      ConsistentRead: true,
    }),
  );
  return out.Item?.value;
}

/** Writes a metadata record (unless dry-run) and returns the change. */
export async function writeMetadata(
  ctx: TaskContext,
  id: string,
  value: unknown,
  detail?: string,
): Promise<Change> {
  if (!ctx.dryRun) {
    await ctx.clients.ddb.send(
      new PutCommand({
        TableName: ctx.desired.table,
        Item: item("METADATA", id, ctx.now(), { value }),
      }),
    );
  }
  return { action: "write", target: `metadata ${id}`, ...(detail ? { detail } : {}) };
}

/**
 * The stored `value` of record `id`: undefined when there is none, or under --dry-run when the
 * table does not exist yet (then every record would be written).
 */
export async function readStored(ctx: TaskContext, id: string): Promise<unknown> {
  try {
    return await readMetadata(ctx.clients.ddb, ctx.desired.table, id);
  } catch (error) {
    if (ctx.dryRun && error instanceof ResourceNotFoundException) return undefined;
    throw error;
  }
}

/** Writes `value` to record `id` unless it equals `stored`; returns the change, if any. */
export async function updateMetadata(
  ctx: TaskContext,
  id: string,
  stored: unknown,
  value: unknown,
  show: (v: unknown) => string = (v) => JSON.stringify(v),
): Promise<Change | undefined> {
  if (isDeepStrictEqual(stored, value)) return undefined;
  const detail = stored === undefined
    ? `${show(value)} (was missing)`
    : `${show(stored)} -> ${show(value)}`;
  return await writeMetadata(ctx, id, value, detail);
}

/**
 * Makes the record `id` hold `value`: reads it, and writes only when it differs.
 * Returns what was stored and the change, when there was one.
 */
export async function reconcileMetadata(
  ctx: TaskContext,
  id: string,
  value: unknown,
  show?: (v: unknown) => string,
): Promise<{ stored: unknown; change?: Change }> {
  const stored = await readStored(ctx, id);
  const change = await updateMetadata(ctx, id, stored, value, show);
  return change ? { stored, change } : { stored };
}
