import assert from "node:assert/strict";
import { reconcileParameters } from "../lib/parameters.ts";
import { readMetadata } from "../lib/metadata.ts";
import { reconcileTable } from "../lib/table.ts";
import { BASE_ARGS, testContext, withDesired } from "./support/aws.ts";
import { checkRefused, type InvalidInput } from "./support/refused.ts";
import type { Network } from "./support/moto.ts";
import {
  CreateSecurityGroupCommand,
  CreateSubnetCommand,
  CreateVpcCommand,
  DescribeSecurityGroupsCommand,
  RunInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { GetCommand, PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";

/** Both subnets of the test network. */
const SUBNETS = (network: Network) => ["--subnet-ids", network.subnetIds.join(",")];

async function setup(args: string[] = []) {
  const ctx = await testContext((network) => [...SUBNETS(network), ...args]);
  await reconcileTable(withDesired(ctx, ctx.desiredFrom(SUBNETS(ctx.network))));
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
  assert.deepEqual(await readMetadata(ddb, ctx.desired.table, "subnet_ids"), ctx.network.subnetIds);
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
  // Three records read, and the subnets and security group checked.
  assert.deepEqual(ctx.counter.toJSON(), {
    "DynamoDB.GetItem": 3,
    "EC2.DescribeSecurityGroups": 1,
    "EC2.DescribeSubnets": 1,
  });
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
  const applied = withDesired(ctx, ctx.desiredFrom(SUBNETS(ctx.network)));
  await reconcileParameters(applied);
  assert.equal(await readMetadata(ctx.clients.ddb, ctx.desired.table, "idle_time_sec"), 300);
});

Deno.test("parameters plans every record under dry-run when the table does not exist yet", async () => {
  const ctx = await testContext((network) => [...SUBNETS(network), "--dry-run"]);
  const outcome = await reconcileParameters(ctx);
  assert.equal(outcome.changes.length, 3);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("parameters fails without writing when a subnet does not exist", async () => {
  const ctx = await testContext((network) => [
    "--subnet-ids",
    `${network.subnetIds[0]},subnet-0000000000000dead`,
  ]);
  await reconcileTable(ctx);
  ctx.counter.reset();
  await assert.rejects(
    reconcileParameters(ctx),
    new Error(
      "subnet-ids: subnet-0000000000000dead does not exist in us-east-1; expected existing ids in " +
        "the runners' VPC",
    ),
  );
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("parameters fails without writing when the subnets lie in two VPCs", async () => {
  const ctx = await setup();
  const { Vpc } = await ctx.clients.ec2.send(new CreateVpcCommand({ CidrBlock: "10.30.0.0/16" }));
  const { Subnet } = await ctx.clients.ec2.send(
    new CreateSubnetCommand({ VpcId: Vpc!.VpcId, CidrBlock: "10.30.1.0/24" }),
  );
  ctx.counter.reset();
  const desired = ctx.desiredFrom([
    "--subnet-ids",
    `${ctx.network.subnetIds[0]},${Subnet!.SubnetId}`,
  ]);
  await assert.rejects(
    reconcileParameters(withDesired(ctx, desired)),
    new Error(
      `subnet-ids: spread over 2 VPCs, ${ctx.network.vpcId} (${ctx.network.subnetIds[0]}) and ` +
        `${Vpc!.VpcId} (${Subnet!.SubnetId}); runners launch from one template into one VPC`,
    ),
  );
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("parameters fails without writing when the security groups are in another VPC", async () => {
  const ctx = await setup();
  const { GroupId } = await ctx.clients.ec2.send(
    new CreateSecurityGroupCommand({ GroupName: "default-vpc-runners", Description: "x" }),
  );
  const { SecurityGroups } = await ctx.clients.ec2.send(
    new DescribeSecurityGroupsCommand({ GroupIds: [GroupId!] }),
  );
  ctx.counter.reset();
  const desired = ctx.desiredFrom([...SUBNETS(ctx.network), "--security-group-ids", GroupId!]);
  await assert.rejects(
    reconcileParameters(withDesired(ctx, desired)),
    new Error(
      `subnet-ids: the subnets are in ${ctx.network.vpcId} but security group ${GroupId} ` +
        `(default-vpc-runners) is in ${SecurityGroups![0].VpcId}; expected subnets in the ` +
        "security groups' VPC",
    ),
  );
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("parameters reports each subnet's zone and free addresses, and warns when one is full", async () => {
  const ctx = await setup();
  // A /28 holds 11 usable addresses once AWS has taken its five.
  const { Subnet } = await ctx.clients.ec2.send(
    new CreateSubnetCommand({
      VpcId: ctx.network.vpcId,
      CidrBlock: "10.20.9.0/28",
      AvailabilityZone: "us-east-1c",
    }),
  );
  await ctx.clients.ec2.send(
    new RunInstancesCommand({
      ImageId: "ami-1e749f67",
      SubnetId: Subnet!.SubnetId,
      MinCount: 11,
      MaxCount: 11,
    }),
  );
  const desired = ctx.desiredFrom([
    "--subnet-ids",
    `${ctx.network.subnetIds[0]},${Subnet!.SubnetId}`,
  ]);
  const outcome = await reconcileParameters(withDesired(ctx, desired));
  assert.equal(outcome.found.vpc, ctx.network.vpcId);
  assert.deepEqual(outcome.found.subnets, {
    [ctx.network.subnetIds[0]]: "us-east-1a, 251 free IPs",
    [Subnet!.SubnetId!]: "us-east-1c, 0 free IPs",
  });
  assert.deepEqual(outcome.warnings, [
    `subnet ${Subnet!.SubnetId} (us-east-1c) has no free IP address: no runner can launch there`,
  ]);
  assert.equal(outcome.changes.length, 3);
});

// Each invalid input of the task: the problem names the field, the offending value and what is
// expected.
const INVALID: InvalidInput[] = [
  [
    "malformed subnet",
    [...BASE_ARGS, "--subnet-ids", "subnet-xyz"],
    undefined,
    /subnet-ids: "subnet-xyz" is not a subnet id \(subnet-…\)/,
  ],
  [
    "duplicate subnet",
    [...BASE_ARGS, "--subnet-ids", "subnet-0000000000000000a,subnet-0000000000000000a"],
    undefined,
    /subnet-ids: "subnet-0000000000000000a" is listed twice/,
  ],
  [
    "zero idle time",
    [...BASE_ARGS, "--idle-time-sec", "0"],
    undefined,
    /idle-time-sec: expected a whole number >= 1, got "0"/,
  ],
  [
    "non-numeric max runtime",
    [...BASE_ARGS, "--max-runtime-min", "abc"],
    undefined,
    /max-runtime-min: expected a whole number >= 1, got "abc"/,
  ],
  [
    "fractional max runtime",
    [...BASE_ARGS, "--max-runtime-min", "1.5"],
    undefined,
    /max-runtime-min: expected a whole number >= 1, got "1.5"/,
  ],
];

Deno.test("parameters refuses invalid inputs with a message and sends no request", (t) =>
  checkRefused(t, INVALID));
