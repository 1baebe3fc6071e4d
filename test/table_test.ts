import assert from "node:assert/strict";
import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  UpdateTimeToLiveCommand,
} from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { reconcileTable } from "../lib/table.ts";
import { testContext } from "./support/aws.ts";

Deno.test("table is created with PK/SK, on-demand billing and TTL when missing", async () => {
  const ctx = await testContext();
  const outcome = await reconcileTable(ctx);
  assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "enable-ttl"]);
  const { Table } = await ctx.clients.ddb.send(
    new DescribeTableCommand({ TableName: "acme-widgets-ci-table" }),
  );
  assert.deepEqual(Table?.KeySchema, [
    { AttributeName: "PK", KeyType: "HASH" },
    { AttributeName: "SK", KeyType: "RANGE" },
  ]);
  assert.equal(Table?.BillingModeSummary?.BillingMode, "PAY_PER_REQUEST");
  const ttl = await ctx.clients.ddb.send(
    new DescribeTimeToLiveCommand({ TableName: "acme-widgets-ci-table" }),
  );
  assert.equal(ttl.TimeToLiveDescription?.AttributeName, "expiresAt");
  assert.equal(ttl.TimeToLiveDescription?.TimeToLiveStatus, "ENABLED");
});

Deno.test("table is left alone with no write when present and configured", async () => {
  const ctx = await testContext();
  await reconcileTable(ctx);
  ctx.counter.reset();
  const outcome = await reconcileTable(ctx);
  assert.deepEqual(outcome.changes, []);
  assert.equal(outcome.summary, "acme-widgets-ci-table is ACTIVE");
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("table keeps a TTL another program set on another attribute, with a warning", async () => {
  const ctx = await testContext();
  const TableName = "acme-widgets-ci-table";
  await ctx.clients.ddb.send(
    new CreateTableCommand({
      TableName,
      KeySchema: [{ AttributeName: "PK", KeyType: "HASH" }, {
        AttributeName: "SK",
        KeyType: "RANGE",
      }],
      AttributeDefinitions: [
        { AttributeName: "PK", AttributeType: "S" },
        { AttributeName: "SK", AttributeType: "S" },
      ],
      BillingMode: "PAY_PER_REQUEST",
    }),
  );
  await ctx.clients.ddb.send(
    new UpdateTimeToLiveCommand({
      TableName,
      TimeToLiveSpecification: { AttributeName: "ttl", Enabled: true },
    }),
  );
  ctx.counter.reset();
  const outcome = await reconcileTable(ctx);
  assert.deepEqual(outcome.changes, []);
  assert.equal(ctx.counter.writes(), 0);
  assert.match(outcome.warnings![0], /TTL is on attribute ttl, not expiresAt/);
});

Deno.test("table plans creation under dry-run and creates nothing", async () => {
  const ctx = await testContext(["--dry-run"]);
  const outcome = await reconcileTable(ctx);
  assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "enable-ttl"]);
  assert.equal(ctx.counter.writes(), 0);
  await assert.rejects(
    ctx.clients.ddb.send(new DescribeTableCommand({ TableName: "acme-widgets-ci-table" })),
    /ResourceNotFound|not found/,
  );
});
