import assert from "node:assert/strict";
import { reconcileParameters } from "../lib/parameters.ts";
import { readMetadata } from "../lib/metadata.ts";
import { reconcileTable } from "../lib/table.ts";
import { desiredFrom, testContext, withDesired } from "./support/aws.ts";
import { GetCommand, PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";

const SUBNETS = ["--subnet-ids", "subnet-fb00be22f898114f8,subnet-a8baee0e1fe19ba60"];

async function setup(args: string[] = []) {
  const ctx = await testContext(desiredFrom([...SUBNETS, ...args]));
  await reconcileTable(withDesired(ctx, desiredFrom(SUBNETS)));
  ctx.counter.reset();
  return ctx;
}

Deno.test("parameters writes every record when the table is empty", async () => {
  const ctx = await setup(["--idle-time-sec", "600"]);
  const outcome = await reconcileParameters(ctx);
  assert.equal(outcome.changes.length, 3);
  const { ddb } = ctx.clients;
  assert.equal(await readMetadata(ddb, ctx.desired.table, "idle_time_sec"), 600);
  assert.equal(await readMetadata(ddb, ctx.desired.table, "max_runtime_min"), 30);
  assert.deepEqual(await readMetadata(ddb, ctx.desired.table, "subnet_ids"), [
    "subnet-fb00be22f898114f8",
    "subnet-a8baee0e1fe19ba60",
  ]);
  const item = await ddb.send(
    new GetCommand({
      TableName: ctx.desired.table,
      Key: { PK: "TYPE#METADATA", SK: "ID#idle_time_sec" },
    }),
  );
  assert.deepEqual(item.Item, {
    PK: "TYPE#METADATA",
    SK: "ID#idle_time_sec",
    entityType: "METADATA",
    identifier: "idle_time_sec",
    value: 600,
    updatedAt: "2026-01-15T12:00:00Z",
  });
});

Deno.test("parameters makes no write when every record matches", async () => {
  const ctx = await setup();
  await reconcileParameters(ctx);
  ctx.counter.reset();
  const outcome = await reconcileParameters(ctx);
  assert.deepEqual(outcome.changes, []);
  assert.equal(ctx.counter.writes(), 0);
  assert.equal(ctx.counter.total(), 3);
});

Deno.test("parameters repairs only the record that drifted", async () => {
  const ctx = await setup();
  await reconcileParameters(ctx);
  await ctx.clients.ddb.send(
    new PutCommand({
      TableName: ctx.desired.table,
      Item: { PK: "TYPE#METADATA", SK: "ID#max_runtime_min", value: 999 },
    }),
  );
  ctx.counter.reset();
  const outcome = await reconcileParameters(ctx);
  assert.deepEqual(outcome.changes.map((c) => c.target), ["metadata max_runtime_min"]);
  assert.equal(outcome.changes[0].detail, "999 -> 30");
  assert.equal(ctx.counter.writes(), 1);
  assert.equal(await readMetadata(ctx.clients.ddb, ctx.desired.table, "max_runtime_min"), 30);
});

Deno.test("parameters writes nothing under dry-run and reports what it would write", async () => {
  const ctx = await setup(["--dry-run"]);
  const outcome = await reconcileParameters(ctx);
  assert.equal(outcome.changes.length, 3);
  assert.equal(ctx.counter.writes(), 0);
  assert.equal(await readMetadata(ctx.clients.ddb, ctx.desired.table, "idle_time_sec"), undefined);
  const applied = withDesired(ctx, desiredFrom(SUBNETS));
  await reconcileParameters(applied);
  assert.equal(await readMetadata(ctx.clients.ddb, ctx.desired.table, "idle_time_sec"), 300);
});

Deno.test("parameters plans every record under dry-run when the table does not exist yet", async () => {
  const ctx = await testContext(desiredFrom([...SUBNETS, "--dry-run"]));
  const outcome = await reconcileParameters(ctx);
  assert.equal(outcome.changes.length, 3);
  assert.equal(ctx.counter.writes(), 0);
});
