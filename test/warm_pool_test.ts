import assert from "node:assert/strict";
import { DescribeInstancesCommand, type Instance } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { PurgeQueueCommand, ReceiveMessageCommand } from "npm:@aws-sdk/client-sqs@3.1169.0";
import { GetCommand, PutCommand, UpdateCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, OWNER_TAG, timestamp } from "../lib/contract.ts";
import { reconcileLaunchTemplate } from "../lib/launch_template.ts";
import { reconcileParameters } from "../lib/parameters.ts";
import type { RunReport } from "../lib/report.ts";
import { reconcileResourcePools } from "../lib/resource_pools.ts";
import { TEMPLATE_ID_TAG, TEMPLATE_VERSION_TAG } from "../lib/rollout.ts";
import { reconcileTable } from "../lib/table.ts";
import type { TaskOutcome } from "../lib/task.ts";
import {
  fleetRequest,
  instanceHoursPerDay,
  reconcileWarmPool,
  type WarmPoolOptions,
  type WarmView,
} from "../lib/warm_pool.ts";
import { parseSchedule, type Schedule } from "../lib/schedule.ts";
import { main } from "../refresh.ts";
import {
  BASE_ARGS,
  baseArgs,
  TEST_PAT,
  type TestContext,
  testContext,
  withDesired,
} from "./support/aws.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { startFakeGithub } from "./support/github.ts";
import { AWS_ENV, resetMoto } from "./support/moto.ts";
import { checkRefused, type InvalidInput } from "./support/refused.ts";

const TABLE = "acme-widgets-ci-table";
const MIN = 60_000;
/** The runner checksums are given, so the generated bootstrap needs no release look-up. */
const TEMPLATE_ARGS = [
  "--root-volume-size",
  "20",
  "--instance-type",
  "t3.micro",
  "--runner-version",
  "2.334.0",
  "--runner-sha256-x64",
  "a".repeat(64),
  "--runner-sha256-arm64",
  "b".repeat(64),
];

/**
 * A pool built by refresh's own tasks (table, template, queues, parameters) and a warm pool
 * context on it; the clock is the real one (moto stamps launch times with it), to the second.
 */
async function pool(args: string[]): Promise<TestContext> {
  const ctx = await testContext(["--only", "warm-pool", ...TEMPLATE_ARGS, ...args]);
  ctx.setNow(new Date(Math.floor(Date.now() / 1000) * 1000));
  const built = { ...ctx, dryRun: false };
  await reconcileTable(built);
  await reconcileLaunchTemplate(built);
  await reconcileResourcePools(built);
  await reconcileParameters(built);
  ctx.counter.reset();
  return ctx;
}

async function run(ctx: TestContext, options: WarmPoolOptions = {}): Promise<TaskOutcome> {
  ctx.counter.reset();
  return await reconcileWarmPool(ctx, options);
}

function view(outcome: TaskOutcome): WarmView {
  return outcome.found.warm as WarmView;
}

async function record(ctx: TestContext, id: string) {
  const { Item } = await ctx.clients.ddb.send(
    new GetCommand({
      TableName: TABLE,
      Key: { PK: "TYPE#INSTANCE", SK: `ID#${id}` },
      ConsistentRead: true,
    }),
  );
  return Item;
}

async function instances(ctx: TestContext): Promise<Instance[]> {
  const out = await ctx.clients.ec2.send(
    new DescribeInstancesCommand({
      Filters: [{ Name: "instance-state-name", Values: ["pending", "running"] }],
    }),
  );
  return out.Reservations!.flatMap((r) => r.Instances!).sort((a, b) =>
    a.InstanceId!.localeCompare(b.InstanceId!)
  );
}

function tags(instance: Instance): Record<string, string> {
  return Object.fromEntries(instance.Tags!.map((t) => [t.Key!, t.Value!]));
}

/** The instance as its bootstrap reports itself: a fresh heartbeat and a worker signal. */
async function report(
  ctx: TestContext,
  id: string,
  signal = "UD_OK",
  heartbeatAgoSec = 2,
): Promise<void> {
  const now = ctx.now().getTime();
  await ctx.clients.ddb.send(
    new PutCommand({
      TableName: TABLE,
      Item: item("HEARTBEAT", id, new Date(now - heartbeatAgoSec * 1000), { value: "PING" }),
    }),
  );
  await ctx.clients.ddb.send(
    new PutCommand({
      TableName: TABLE,
      Item: item("WS", id, new Date(now - 60_000), { value: { state: signal, runId: "warm-x" } }),
    }),
  );
}

async function queueUrl(ctx: TestContext, cls: string): Promise<string> {
  const { Item } = await ctx.clients.ddb.send(
    new GetCommand({
      TableName: TABLE,
      Key: { PK: "TYPE#METADATA", SK: "ID#resource_class_config" },
    }),
  );
  return Item!.value[cls].queueUrl;
}

/** Every message in a class's queue (received and left to become visible again). */
async function messages(ctx: TestContext, cls: string): Promise<Record<string, unknown>[]> {
  const url = await queueUrl(ctx, cls);
  const out = await ctx.clients.sqs.send(
    new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, VisibilityTimeout: 0 }),
  );
  return (out.Messages ?? []).map((m) => JSON.parse(m.Body!));
}

/** Claims an idle instance as provision does: idle -> claimed, runId "" -> run id. */
async function claim(ctx: TestContext, id: string, runId: string): Promise<void> {
  await ctx.clients.ddb.send(
    new UpdateCommand({
      TableName: TABLE,
      Key: { PK: "TYPE#INSTANCE", SK: `ID#${id}` },
      ConditionExpression: "#s = :idle AND runId = :none AND threshold > :now",
      UpdateExpression: "SET #s = :claimed, runId = :run, threshold = :t, updatedAt = :now",
      ExpressionAttributeNames: { "#s": "state" },
      ExpressionAttributeValues: {
        ":idle": "idle",
        ":none": "",
        ":claimed": "claimed",
        ":run": runId,
        ":now": timestamp(new Date()),
        ":t": timestamp(new Date(Date.now() + 5 * MIN)),
      },
    }),
  );
}

function writes(ctx: TestContext): Record<string, number> {
  return Object.fromEntries(
    [...ctx.counter.counts].filter(([op]) =>
      /\.(Create|Put|Update|Send|Delete|Terminate|BatchWrite|Run)/.test(op)
    ),
  );
}

Deno.test("warm pool makes no call at all when no warm pool is configured", async () => {
  const ctx = await testContext(["--only", "warm-pool"]);
  ctx.counter.reset();
  const outcome = await reconcileWarmPool(ctx);
  assert.equal(ctx.counter.total(), 0, JSON.stringify(ctx.counter.toJSON()));
  assert.deepEqual(outcome.changes, []);
  assert.match(outcome.summary, /no warm pool/);
});

Deno.test("warm pool launches a class's shortfall from the pool's template, idle and unclaimed, advertised only once ready", async () => {
  const ctx = await pool(["--warm-pool", "large=2", "--warm-pool-usage-class", "on-demand"]);
  const first = await run(ctx);
  assert.equal(ctx.counter.counts.get("EC2.CreateFleet"), 1);
  assert.deepEqual(view(first).classes.large, {
    minimum: 2,
    ready: 0,
    booting: 0,
    launched: 2,
    outdated: 0,
    unhealthy: 0,
    extra: 0,
    instanceHoursPerDay: 48,
  });
  const launched = await instances(ctx);
  assert.equal(launched.length, 2);
  const hold = timestamp(new Date(ctx.now().getTime() + 20 * MIN));
  for (const instance of launched) {
    const t = tags(instance);
    assert.match(t.InitialRunId, /^warm-large-\d{8}T\d{6}Z$/);
    assert.equal(t.AllowSelfTermination, "true");
    assert.equal(t[OWNER_TAG], TABLE);
    // From the pool's template at its default version, as EC2 records it.
    assert.match(t[TEMPLATE_ID_TAG], /^lt-/);
    assert.equal(t[TEMPLATE_VERSION_TAG], "1");
    assert.equal(instance.SubnetId, ctx.network.subnetIds[0]);
    const r = await record(ctx, instance.InstanceId!);
    assert.deepEqual(
      { ...r, updatedAt: undefined },
      {
        PK: "TYPE#INSTANCE",
        SK: `ID#${instance.InstanceId}`,
        entityType: "INSTANCE",
        identifier: instance.InstanceId,
        state: "idle",
        runId: "",
        threshold: hold,
        resourceClass: "large",
        instanceType: "t3.micro",
        usageClass: "on-demand",
        updatedAt: undefined,
      },
    );
  }
  // Nothing is advertised while they boot, and a run while they boot changes nothing.
  assert.deepEqual(await messages(ctx, "large"), []);
  const booting = await run(ctx);
  assert.deepEqual(booting.changes, []);
  assert.equal(ctx.counter.writes(), 0, JSON.stringify(ctx.counter.toJSON()));
  assert.equal(view(booting).classes.large.booting, 2);

  // One reports UD_OK with a fresh heartbeat: that one is advertised, in provision's format.
  const [a, b] = launched.map((i) => i.InstanceId!);
  await report(ctx, a);
  // The other reported UD_OK but its heartbeat is stale: not ready.
  await report(ctx, b, "UD_OK", 40);
  const ready = await run(ctx);
  assert.deepEqual(writes(ctx), { "DynamoDB.UpdateItem": 1, "SQS.SendMessageBatch": 1 });
  assert.deepEqual(ready.changes.map((c) => [c.action, c.target]), [[
    "keep warm",
    `instance ${a}`,
  ]]);
  assert.deepEqual(await messages(ctx, "large"), [{
    id: a,
    resourceClass: "large",
    instanceType: "t3.micro",
    cpu: 2,
    mmem: 4096,
    usageClass: "on-demand",
    threshold: hold,
  }]);
  assert.equal((await record(ctx, a))!.advertisedThreshold, hold);
  assert.equal((await record(ctx, b))!.advertisedThreshold, undefined);
});

Deno.test("warm pool's request is provision's: CreateFleet instant, $Default, a subnet override each with the class's CPU and memory", async () => {
  const ctx = await testContext([
    "--warm-pool",
    "xlarge=1",
    "--warm-pool-instance-types",
    "c6i.*,m7i.xlarge",
  ]);
  const input = fleetRequest(
    ctx,
    { id: "lt-0123456789abcdef0", version: 3, ami: "" },
    ["subnet-1", "subnet-2"],
    "xlarge",
    { cpu: 4, mmem: 8192 },
    3,
    new Date("2026-01-15T12:00:00Z"),
  );
  assert.equal(input.Type, "instant");
  assert.deepEqual(input.LaunchTemplateConfigs![0].LaunchTemplateSpecification, {
    LaunchTemplateId: "lt-0123456789abcdef0",
    Version: "$Default",
  });
  assert.deepEqual(
    input.LaunchTemplateConfigs![0].Overrides!.map((o) => o.SubnetId),
    ["subnet-1", "subnet-2"],
  );
  assert.deepEqual(input.LaunchTemplateConfigs![0].Overrides![1].InstanceRequirements, {
    VCpuCount: { Min: 4, Max: 4 },
    MemoryMiB: { Min: 8192 },
    BurstablePerformance: "excluded",
    AllowedInstanceTypes: ["c6i.*", "m7i.xlarge"],
  });
  assert.deepEqual(input.TargetCapacitySpecification, {
    TotalTargetCapacity: 3,
    DefaultTargetCapacityType: "spot",
  });
  assert.deepEqual(input.TagSpecifications, [{
    ResourceType: "instance",
    Tags: [
      { Key: "AllowSelfTermination", Value: "true" },
      { Key: "InitialRunId", Value: "warm-xlarge-20260115T120000Z" },
      { Key: OWNER_TAG, Value: TABLE },
      { Key: "refresh:warm-pool", Value: "xlarge" },
    ],
  }]);
  // Not a workflow run id, and one the bootstrap accepts (letters, digits, . _ -).
  assert.match(input.TagSpecifications![0].Tags![1].Value!, /^(?!\d+$)[A-Za-z0-9._-]{1,128}$/);
});

/** A pool whose `count` warm instances of `large` are launched and ready (advertised once). */
async function readyPool(args: string[], count: number): Promise<[TestContext, string[]]> {
  const ctx = await pool([
    "--warm-pool",
    `large=${count}`,
    "--warm-pool-usage-class",
    "on-demand",
    ...args,
  ]);
  await run(ctx);
  const ids = (await instances(ctx)).map((i) => i.InstanceId!);
  assert.equal(ids.length, count);
  for (const id of ids) await report(ctx, id);
  await run(ctx);
  assert.equal(ctx.counter.counts.get("DynamoDB.UpdateItem"), count);
  await ctx.clients.sqs.send(new PurgeQueueCommand({ QueueUrl: await queueUrl(ctx, "large") }));
  return [ctx, ids];
}

Deno.test("warm pool converged: a run at once writes nothing, one after half the hold only keeps warm", async () => {
  const [ctx, ids] = await readyPool([], 2);
  const again = await run(ctx);
  assert.equal(ctx.counter.writes(), 0, JSON.stringify(ctx.counter.toJSON()));
  assert.deepEqual(again.changes, []);
  assert.deepEqual(view(again).classes.large.ready, 2);

  ctx.setNow(new Date(ctx.now().getTime() + 10 * MIN));
  for (const id of ids) await report(ctx, id, "UD_OK");
  const later = await run(ctx);
  // Exactly the keep-alive writes: one conditional update per instance, one batch of messages.
  assert.deepEqual(writes(ctx), { "DynamoDB.UpdateItem": 2, "SQS.SendMessageBatch": 1 });
  const renewed = timestamp(new Date(ctx.now().getTime() + 20 * MIN));
  for (const id of ids) assert.equal((await record(ctx, id))!.threshold, renewed);
  const sent = await messages(ctx, "large");
  assert.deepEqual(sent.map((m) => m.id).sort(), [...ids].sort());
  assert.ok(sent.every((m) => m.threshold === renewed));
  assert.equal(later.changes.length, 2);
});

Deno.test("warm pool: a claim takes one without launching, the next run launches its replacement", async () => {
  const [ctx, ids] = await readyPool([], 2);
  await claim(ctx, ids[0], "7001");
  const next = await run(ctx);
  assert.equal(ctx.counter.counts.get("EC2.CreateFleet"), 1);
  assert.equal(view(next).classes.large.ready, 1);
  assert.equal(view(next).classes.large.launched, 1);
  assert.equal((await instances(ctx)).length, 3);
  // The claimed record is provision's: untouched.
  const claimed = await record(ctx, ids[0]);
  assert.equal(claimed!.state, "claimed");
  assert.equal(claimed!.runId, "7001");
});

Deno.test("warm pool: a claim between the read and the keep-alive wins; nothing else changes", async () => {
  const [ctx, ids] = await readyPool([], 1);
  ctx.setNow(new Date(ctx.now().getTime() + 15 * MIN));
  await report(ctx, ids[0]);
  const before = await record(ctx, ids[0]);
  const outcome = await run(ctx, {
    afterRead: async () => {
      await claim(ctx, ids[0], "7002");
      ctx.counter.reset(); // count refresh's calls only
    },
  });
  // The conditional update was tried and failed; no message, no launch, no other write.
  assert.deepEqual(writes(ctx), { "DynamoDB.UpdateItem": 1 });
  assert.deepEqual(outcome.changes, []);
  assert.match(outcome.warnings!.join("\n"), new RegExp(`${ids[0]} changed after it was read`));
  const after = await record(ctx, ids[0]);
  assert.equal(after!.state, "claimed");
  assert.equal(after!.runId, "7002");
  assert.notEqual(after!.threshold, before!.threshold);
  assert.equal(after!.advertisedThreshold, before!.advertisedThreshold);
  assert.deepEqual(await messages(ctx, "large"), []);
});

Deno.test("warm pool above its minimum keeps only the minimum warm and lets the rest expire", async () => {
  const [ctx, ids] = await readyPool([], 3);
  const smaller = withDesired(
    ctx,
    ctx.desiredFrom([
      "--only",
      "warm-pool",
      ...TEMPLATE_ARGS,
      "--warm-pool",
      "large=1",
      "--warm-pool-usage-class",
      "on-demand",
    ]),
  );
  smaller.setNow(new Date(ctx.now().getTime() + 15 * MIN));
  for (const id of ids) await report(smaller, id);
  const outcome = await run(smaller);
  assert.equal(view(outcome).classes.large.extra, 2);
  assert.deepEqual(writes(smaller), { "DynamoDB.UpdateItem": 1, "SQS.SendMessageBatch": 1 });
  const kept = outcome.changes.map((c) => c.target.replace("instance ", ""));
  assert.equal(kept.length, 1);
  // The other two keep their old thresholds: past them, they are reaped as today.
  const left = ids.filter((id) => id !== kept[0]);
  for (const id of left) {
    const r = await record(smaller, id);
    assert.equal(r!.threshold, r!.advertisedThreshold);
    assert.ok(Date.parse(r!.threshold) < smaller.now().getTime() + 10 * MIN);
  }
});

Deno.test("warm pool outside its schedule launches nothing and keeps nothing warm: the pool drains", async () => {
  const [ctx, ids] = await readyPool([], 2);
  // A window that is never now: the day before today, in UTC.
  const yesterday = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][
    (ctx.now().getUTCDay() + 6) % 7
  ];
  const closed = withDesired(
    ctx,
    ctx.desiredFrom([
      "--only",
      "warm-pool",
      ...TEMPLATE_ARGS,
      "--warm-pool",
      "large=2",
      "--warm-pool-schedule",
      `${yesterday} 00:00-24:00 UTC`,
    ]),
  );
  closed.setNow(new Date(ctx.now().getTime() + 15 * MIN));
  for (const id of ids) await report(closed, id);
  const outcome = await run(closed);
  assert.equal(closed.counter.writes(), 0, JSON.stringify(closed.counter.toJSON()));
  assert.deepEqual(view(outcome).classes.large, {
    minimum: 0,
    ready: 2,
    booting: 0,
    launched: 0,
    outdated: 0,
    unhealthy: 0,
    extra: 2,
    instanceHoursPerDay: 6.9,
  });
  assert.equal(view(outcome).inSchedule, false);
  assert.match(outcome.summary, /outside the schedule/);
});

Deno.test("warm pool counts a failed or silent instance as not ready and launches in its place", async () => {
  const ctx = await pool(["--warm-pool", "large=2", "--warm-pool-usage-class", "on-demand"]);
  await run(ctx);
  const [a, b] = (await instances(ctx)).map((i) => i.InstanceId!);
  await report(ctx, a, "UD_FAILED");
  await report(ctx, b);
  const outcome = await run(ctx);
  assert.deepEqual(
    { ...view(outcome).classes.large, instanceHoursPerDay: undefined },
    {
      minimum: 2,
      ready: 1,
      booting: 0,
      launched: 1,
      outdated: 0,
      unhealthy: 1,
      extra: 0,
      instanceHoursPerDay: undefined,
    },
  );
});

Deno.test("warm pool under --dry-run lists what it would launch and keep warm, and writes nothing", async () => {
  const ctx = await pool(["--warm-pool", "large=1", "--dry-run"]);
  const outcome = await run(ctx);
  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(outcome.changes.map((c) => [c.action, c.target]), [[
    "launch",
    "1 large instance",
  ]]);
  assert.match(outcome.changes[0].detail!, /CreateFleet from lt-\w+ version 1 \(\$Default\)/);
  assert.equal(view(outcome).classes.large.launched, 1);
  assert.deepEqual(await instances(ctx), []);
});

/** Runs the entry in-process; returns its exit code and JSON report. */
async function runMain(args: string[], env: Record<string, string>) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main([...args, "--json"], { ...AWS_ENV, GITHUB_TOKEN: TEST_PAT, ...env }, {
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    readTextFile: () => {
      throw new Error("no files here");
    },
  });
  return { code, report: JSON.parse(out.join("\n")) as RunReport, stderr: err.join("\n") };
}

Deno.test("warm pool: a failing launch is reported, the other tasks still run, the next run launches", async () => {
  const network = await resetMoto();
  await using proxy = startFaultProxy({ target: AWS_ENV.AWS_ENDPOINT_URL });
  // The reaper lists the pool's runners: on 127.0.0.1 too.
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  proxy.respond("EC2.CreateFleet", {
    status: 200,
    headers: { "content-type": "text/xml;charset=UTF-8" },
    body: `<?xml version="1.0" encoding="UTF-8"?>
<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>5a3f9a4e-0000-4000-8000-000000000000</requestId>
  <fleetId>fleet-0123456789abcdef0</fleetId>
  <errorSet><item>
    <errorCode>InsufficientInstanceCapacity</errorCode>
    <errorMessage>We currently do not have sufficient capacity in the Availability Zone you requested.</errorMessage>
    <lifecycle>spot</lifecycle>
  </item></errorSet>
  <fleetInstanceSet/>
</CreateFleetResponse>`,
  });
  const args = [
    ...baseArgs(network),
    ...TEMPLATE_ARGS,
    "--only",
    "table,launch-template,resource-pools,parameters,reaper,warm-pool",
    "--warm-pool",
    "large=1",
    "--github-api-url",
    gh.url,
  ];
  const first = await runMain(args, { AWS_ENDPOINT_URL: proxy.url });
  assert.equal(first.code, 1);
  const byTask = Object.fromEntries(first.report.results.map((r) => [r.task, r]));
  assert.equal(byTask["warm-pool"].status, "failed");
  assert.match(
    byTask["warm-pool"].error!,
    /launched 0 of 1 large instances: InsufficientInstanceCapacity: We currently do not have sufficient capacity.*; retried next run/,
  );
  for (const task of ["table", "launch-template", "resource-pools", "parameters"]) {
    assert.equal(byTask[task].status, "changed", `${task}: ${byTask[task].error}`);
  }
  assert.equal(byTask.reaper.status, "unchanged", byTask.reaper.error);
  // The next run (EC2 has capacity again) launches it.
  const second = await runMain(args, { AWS_ENDPOINT_URL: proxy.url });
  assert.equal(second.code, 0, JSON.stringify(second.report.results, null, 1));
  const warm = second.report.results.find((r) => r.task === "warm-pool")!;
  assert.equal((warm.found.warm as WarmView).classes.large.launched, 1);
});

Deno.test("warm pool cost is the minimum times the schedule's hours per day", () => {
  assert.equal(instanceHoursPerDay(2, null), 48);
  const schedule = parseSchedule("Mon-Fri 08:00-19:00 Europe/Berlin") as Schedule;
  // 5 days of 11 hours, over 7 days: 7.86 hours a day, for 3 instances 23.6.
  assert.equal(instanceHoursPerDay(3, schedule), 23.6);
});

Deno.test("warm pool's inputs parse from flags and from the config file", async () => {
  const ctx = await testContext([], {});
  const flags = ctx.desiredFrom([
    "--warm-pool",
    "large=2, xlarge=0",
    "--warm-pool-schedule",
    "Mon-Fri 08:00-19:00 Europe/Berlin",
  ]).warmPool;
  assert.deepEqual(flags.minimum, { large: 2, xlarge: 0 });
  assert.equal(flags.schedule!.text, "Mon-Fri 08:00-19:00 Europe/Berlin");
  assert.equal(flags.holdMin, 20);
  assert.equal(flags.usageClass, "spot");
  const file = ctx.desiredFrom(["--config", "/pool.json"], { GITHUB_TOKEN: TEST_PAT }, {
    "/pool.json": JSON.stringify({
      "warm-pool": { large: 1, "2xlarge": 3 },
      "warm-pool-hold-min": 30,
      "warm-pool-usage-class": "on-demand",
    }),
  }).warmPool;
  assert.deepEqual(file.minimum, { large: 1, "2xlarge": 3 });
  assert.equal(file.holdMin, 30);
  assert.equal(file.usageClass, "on-demand");
  assert.equal(file.schedule, null);
});

const INVALID: InvalidInput[] = [
  [
    "unknown class",
    [...BASE_ARGS, "--warm-pool", "huge=2"],
    undefined,
    /warm-pool: unknown resource class "huge"; expected one of large, xlarge/,
  ],
  [
    "bad number",
    [...BASE_ARGS, "--warm-pool", "large=two"],
    undefined,
    /warm-pool: large=two is not a whole number 0-100/,
  ],
  [
    "negative number",
    [...BASE_ARGS, "--warm-pool", "large=-1"],
    undefined,
    /warm-pool: large=-1 is not a whole number 0-100/,
  ],
  [
    "not CLASS=N",
    [...BASE_ARGS, "--warm-pool", "large"],
    undefined,
    /warm-pool: "large" is not CLASS=N \(like large=2\)/,
  ],
  [
    "class twice",
    [...BASE_ARGS, "--warm-pool", "large=1,large=2"],
    undefined,
    /warm-pool: class "large" is given more than once/,
  ],
  [
    "bad schedule",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-schedule", "Mon-Fri 8-19 Europe/Berlin"],
    undefined,
    /warm-pool-schedule: window "Mon-Fri 8-19 Europe\/Berlin": times "8-19" are not HH:MM-HH:MM/,
  ],
  [
    "unknown time zone",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-schedule", "daily 08:00-19:00 Berlin"],
    undefined,
    /warm-pool-schedule: .*unknown time zone "Berlin"/,
  ],
  [
    "schedule without a warm pool",
    [...BASE_ARGS, "--warm-pool-schedule", "daily 08:00-19:00"],
    undefined,
    /warm-pool-schedule: given without --warm-pool/,
  ],
  [
    "usage class",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-usage-class", "reserved"],
    undefined,
    /warm-pool-usage-class: expected spot or on-demand, got "reserved"/,
  ],
  [
    "hold too short",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-hold-min", "1"],
    undefined,
    /warm-pool-hold-min: expected a whole number 2-1440, got "1"/,
  ],
];

Deno.test("warm pool refuses invalid inputs with a message and sends no request", (t) =>
  checkRefused(t, INVALID));
