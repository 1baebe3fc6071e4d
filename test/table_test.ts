import assert from "node:assert/strict";
import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  UpdateTimeToLiveCommand,
} from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { reconcileTable, tableDefinition } from "../lib/table.ts";
import { contextOn, desiredFrom, testContext } from "./support/aws.ts";
import { type FaultProxy, startFaultProxy } from "./support/fault_proxy.ts";
import { MOTO_URL, resetMoto } from "./support/moto.ts";

/** A context on a reset moto whose clients go through `proxy`. */
async function throughProxy(proxy: FaultProxy) {
  const network = await resetMoto();
  return contextOn(desiredFrom([], undefined, undefined, network), network, {
    clientEnv: { AWS_ENDPOINT_URL: proxy.url },
  });
}

const TTL = (status: string) => (answer: { status: number; headers: Record<string, string> }) => ({
  ...answer,
  body: JSON.stringify({ TimeToLiveDescription: { TimeToLiveStatus: status } }),
});

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
    new CreateTableCommand(tableDefinition(TableName)),
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

Deno.test("table warns and leaves TTL alone while it is DISABLING, and enables it once DISABLED", async () => {
  await using proxy = startFaultProxy({ target: MOTO_URL });
  const ctx = await throughProxy(proxy);
  // DynamoDB refuses UpdateTimeToLive for up to an hour while TTL is DISABLING; moto has no such
  // state, so the proxy answers DescribeTimeToLive with it.
  proxy.rewrite("DynamoDB.DescribeTimeToLive", TTL("DISABLING"));
  const first = await reconcileTable(ctx);
  assert.deepEqual(first.changes.map((c) => c.action), ["create"]);
  assert.equal(first.found.ttl, "DISABLING");
  assert.deepEqual(first.warnings, [
    "TTL of acme-widgets-ci-table is being disabled (DISABLING), and DynamoDB refuses to change it until that ends (up to an hour); a later run enables it on expiresAt",
  ]);
  assert.equal(ctx.counter.counts.get("DynamoDB.UpdateTimeToLive"), undefined);

  const later = await reconcileTable(ctx);
  assert.deepEqual(later.changes.map((c) => c.action), ["enable-ttl"]);
  assert.deepEqual(later.warnings, []);
});

Deno.test("table warns when DynamoDB refuses to change TTL so soon after the last change, and a later run enables it", async () => {
  await using proxy = startFaultProxy({ target: MOTO_URL });
  const ctx = await throughProxy(proxy);
  proxy.respond("DynamoDB.UpdateTimeToLive", {
    status: 400,
    headers: { "content-type": "application/x-amz-json-1.0" },
    body: JSON.stringify({
      __type: "com.amazon.coral.validate#ValidationException",
      message: "Time to live has been modified multiple times within a fixed interval",
    }),
  });
  const first = await reconcileTable(ctx);
  assert.deepEqual(first.changes.map((c) => c.action), ["create"]);
  assert.equal(first.found.ttl, "DISABLED");
  assert.match(
    first.warnings![0],
    /^DynamoDB refused to enable TTL on acme-widgets-ci-table yet \("Time to live has been modified multiple times within a fixed interval"\)/,
  );
  const later = await reconcileTable(ctx);
  assert.deepEqual(later.changes.map((c) => c.action), ["enable-ttl"]);
  assert.equal(later.found.ttl, "ENABLED");
});

Deno.test("table takes the table a lost CreateTable reply made as created", async () => {
  await using proxy = startFaultProxy({ target: MOTO_URL });
  const ctx = await throughProxy(proxy);
  proxy.inject("DynamoDB.CreateTable", "lose-reply");
  const outcome = await reconcileTable(ctx);
  assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "enable-ttl"]);
  assert.deepEqual(
    proxy.requests.filter((r) => r.operation === "DynamoDB.CreateTable").map((r) => r.fault ?? "-"),
    ["lose-reply", "-"],
  );
  assert.ok(
    ctx.lines.includes(
      "warning: table: acme-widgets-ci-table exists already (an earlier attempt made it)",
    ),
  );
});
