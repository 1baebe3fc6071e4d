/**
 * Reconciles the DynamoDB table itself: creates it when missing (keys `PK`/`SK`, on-demand
 * billing) and enables TTL on `expiresAt`, which the reaper sets on terminated instance records.
 * An existing table is never changed otherwise; a TTL already set on another attribute is left
 * alone and reported.
 *
 * DynamoDB refuses UpdateTimeToLive while a change is under way (status `DISABLING`, up to an hour)
 * and for a while after one ("Time to live has been modified multiple times within a fixed
 * interval"): both are a warning, and a later run enables TTL. A table that a lost reply of
 * CreateTable made (the SDK's retry then finds it exists) is taken as created.
 *
 * @module
 */
import {
  CreateTableCommand,
  type CreateTableCommandInput,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  ResourceInUseException,
  ResourceNotFoundException,
  UpdateTimeToLiveCommand,
  waitUntilTableExists,
} from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { PK, SK, TTL_ATTRIBUTE } from "./contract.ts";
import type { Change, SharedDesired, TaskContext as Context, TaskOutcome } from "./task.ts";

/** The part of the desired state the table task reads. */
export type TableDesired = Pick<SharedDesired, "table">;
type TaskContext = Context<TableDesired>;

export async function reconcileTable(ctx: TaskContext): Promise<TaskOutcome> {
  const TableName = ctx.desired.table;
  const changes: Change[] = [];
  const warnings: string[] = [];
  let status = await describeTable(ctx);
  if (status === "MISSING") {
    changes.push({ action: "create", target: `table ${TableName}`, detail: "PK/SK, on-demand" });
    if (!ctx.dryRun) status = await createTable(ctx);
  }
  const ttl = status === "MISSING" ? "DISABLED" : await readTtl(ctx, warnings);
  let ttlNow = ttl;
  if (ttl === "DISABLING") {
    warnings.push(
      `TTL of ${TableName} is being disabled (DISABLING), and DynamoDB refuses to change it until that ends (up to an hour); a later run enables it on ${TTL_ATTRIBUTE}`,
    );
  } else if (ttl === "DISABLED") {
    const change = { action: "enable-ttl", target: `table ${TableName}`, detail: TTL_ATTRIBUTE };
    if (ctx.dryRun) changes.push(change);
    else if (await enableTtl(ctx, warnings)) {
      changes.push(change);
      ttlNow = "ENABLED";
    }
  }
  return {
    summary: changes.length === 0
      ? `${TableName} is ${status}`
      : `${TableName}: ${changes.map((c) => c.action).join(", ")}`,
    found: { table: TableName, status, ttl: ttlNow },
    changes,
    warnings,
  };
}

/** The table's status, or MISSING; a table whose keys are not PK/SK is refused. */
async function describeTable(ctx: TaskContext): Promise<string> {
  const TableName = ctx.desired.table;
  try {
    const out = await ctx.clients.ddb.send(new DescribeTableCommand({ TableName }));
    const keys = out.Table?.KeySchema ?? [];
    const schema = keys.map((k) => `${k.AttributeName} (${k.KeyType?.toLowerCase()})`).join(", ");
    if (schema !== `${PK} (hash), ${SK} (range)`) {
      throw new Error(
        `table ${TableName} has the key schema ${schema}; expected ${PK} (hash), ${SK} (range)`,
      );
    }
    return out.Table?.TableStatus ?? "UNKNOWN";
  } catch (error) {
    if (error instanceof ResourceNotFoundException) return "MISSING";
    throw error;
  }
}

/** The table as the contract defines it: keys `PK` (hash) and `SK` (range), on-demand billing. */
export function tableDefinition(TableName: string): CreateTableCommandInput {
  return {
    TableName,
    KeySchema: [{ AttributeName: PK, KeyType: "HASH" }, { AttributeName: SK, KeyType: "RANGE" }],
    AttributeDefinitions: [
      { AttributeName: PK, AttributeType: "S" },
      { AttributeName: SK, AttributeType: "S" },
    ],
    BillingMode: "PAY_PER_REQUEST",
  };
}

/** Creates the table and waits until it is active. */
async function createTable(ctx: TaskContext): Promise<string> {
  const { ddb } = ctx.clients;
  const TableName = ctx.desired.table;
  try {
    await ddb.send(new CreateTableCommand(tableDefinition(TableName)));
  } catch (error) {
    // The table was missing a moment ago: it is ours, made by an attempt whose reply was lost (the
    // SDK retried it), or by a run racing this one. Its keys are checked by the next run.
    if (!(error instanceof ResourceInUseException)) throw error;
    ctx.log.warn(`table: ${TableName} exists already (an earlier attempt made it)`);
  }
  ctx.log.info(`table: created ${TableName}, waiting for it to become active`);
  await waitUntilTableExists({ client: ddb, maxWaitTime: 300, minDelay: 1 }, { TableName });
  return "ACTIVE";
}

/** The TTL status; a TTL on another attribute is left alone, with a warning. */
async function readTtl(ctx: TaskContext, warnings: string[]): Promise<string> {
  const out = await ctx.clients.ddb.send(
    new DescribeTimeToLiveCommand({ TableName: ctx.desired.table }),
  );
  const description = out.TimeToLiveDescription;
  const ttl = description?.TimeToLiveStatus ?? "DISABLED";
  const attribute = description?.AttributeName;
  if ((ttl === "ENABLED" || ttl === "ENABLING") && attribute !== TTL_ATTRIBUTE) {
    warnings.push(
      `TTL is on attribute ${attribute}, not ${TTL_ATTRIBUTE}: terminated instance records are removed by the reaper only`,
    );
  }
  return ttl;
}

/**
 * Enables TTL on {@link TTL_ATTRIBUTE}, or returns false when DynamoDB refuses a change so soon
 * after the last one (a ValidationException saying so): a warning, and a later run enables it.
 */
async function enableTtl(ctx: TaskContext, warnings: string[]): Promise<boolean> {
  const TableName = ctx.desired.table;
  try {
    await ctx.clients.ddb.send(
      new UpdateTimeToLiveCommand({
        TableName,
        TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
      }),
    );
    return true;
  } catch (error) {
    const e = error as Error;
    if (e.name !== "ValidationException" || !/modified multiple times/i.test(e.message)) throw e;
    warnings.push(
      `DynamoDB refused to enable TTL on ${TableName} yet ("${e.message}"): its TTL was changed within the last hour; a later run enables it on ${TTL_ATTRIBUTE}`,
    );
    return false;
  }
}
