/**
 * Reconciles the DynamoDB table itself: creates it when missing (keys `PK`/`SK`, on-demand
 * billing) and enables TTL on `expiresAt`, which the reaper sets on terminated instance records.
 * An existing table is never changed otherwise; a TTL already set on another attribute is left
 * alone and reported.
 *
 * @module
 */
import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  ResourceNotFoundException,
  UpdateTimeToLiveCommand,
  waitUntilTableExists,
} from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { PK, SK, TTL_ATTRIBUTE } from "./contract.ts";
import type { Change, TaskContext, TaskOutcome } from "./task.ts";

export async function reconcileTable(ctx: TaskContext): Promise<TaskOutcome> {
  const { ddb } = ctx.clients;
  const TableName = ctx.desired.table;
  const changes: Change[] = [];
  const warnings: string[] = [];
  let status: string;
  try {
    const out = await ddb.send(new DescribeTableCommand({ TableName }));
    status = out.Table?.TableStatus ?? "UNKNOWN";
    const keys = out.Table?.KeySchema ?? [];
    const schema = keys.map((k) => `${k.AttributeName} (${k.KeyType?.toLowerCase()})`).join(", ");
    if (schema !== `${PK} (hash), ${SK} (range)`) {
      throw new Error(
        `table ${TableName} has the key schema ${schema}; expected ${PK} (hash), ${SK} (range)`,
      );
    }
  } catch (error) {
    if (!(error instanceof ResourceNotFoundException)) throw error;
    status = "MISSING";
    changes.push({ action: "create", target: `table ${TableName}`, detail: "PK/SK, on-demand" });
    if (!ctx.dryRun) {
      await ddb.send(
        new CreateTableCommand({
          TableName,
          KeySchema: [{ AttributeName: PK, KeyType: "HASH" }, {
            AttributeName: SK,
            KeyType: "RANGE",
          }],
          AttributeDefinitions: [
            { AttributeName: PK, AttributeType: "S" },
            { AttributeName: SK, AttributeType: "S" },
          ],
          BillingMode: "PAY_PER_REQUEST",
        }),
      );
      ctx.log.info(`table: created ${TableName}, waiting for it to become active`);
      await waitUntilTableExists({ client: ddb, maxWaitTime: 300, minDelay: 1 }, { TableName });
      status = "ACTIVE";
    }
  }

  let ttl = "DISABLED";
  if (status !== "MISSING") {
    const out = await ddb.send(new DescribeTimeToLiveCommand({ TableName }));
    const description = out.TimeToLiveDescription;
    ttl = description?.TimeToLiveStatus ?? "DISABLED";
    const attribute = description?.AttributeName;
    if ((ttl === "ENABLED" || ttl === "ENABLING") && attribute !== TTL_ATTRIBUTE) {
      warnings.push(
        `TTL is on attribute ${attribute}, not ${TTL_ATTRIBUTE}: terminated instance records are removed by the reaper only`,
      );
    }
  }
  if (ttl === "DISABLED" || ttl === "DISABLING") {
    changes.push({ action: "enable-ttl", target: `table ${TableName}`, detail: TTL_ATTRIBUTE });
    if (!ctx.dryRun) {
      await ddb.send(
        new UpdateTimeToLiveCommand({
          TableName,
          TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
        }),
      );
      ttl = "ENABLED";
    }
  }
  return {
    summary: changes.length === 0
      ? `${TableName} is ${status}`
      : `${TableName}: ${changes.map((c) => c.action).join(", ")}`,
    found: { table: TableName, status, ttl },
    changes,
    warnings,
  };
}
