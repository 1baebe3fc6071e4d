import assert from "node:assert/strict";
import {
  CreateTagsCommand,
  DeleteTagsCommand,
  DescribeInstancesCommand,
  type Instance,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { PurgeQueueCommand, ReceiveMessageCommand } from "npm:@aws-sdk/client-sqs@3.1169.0";
import { GetCommand, PutCommand, UpdateCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, OWNER_TAG, timestamp } from "../lib/contract.ts";
import { reconcileLaunchTemplate } from "../lib/launch_template.ts";
import { reconcileParameters } from "../lib/parameters.ts";
import { reapInstances } from "../lib/reaper.ts";
import { reconcileResourcePools } from "../lib/resource_pools.ts";
import { TEMPLATE_ID_TAG, TEMPLATE_VERSION_TAG } from "../lib/rollout.ts";
import { reconcileTable } from "../lib/table.ts";
import type { TaskOutcome } from "../lib/task.ts";
import { reconcileWarmPool, type WarmPoolOptions, type WarmView } from "../lib/warm_pool.ts";
import {
  baseArgs,
  TEMPLATE_ARGS,
  TEST_PAT,
  type TestContext,
  testContext,
  withDesired,
} from "./support/aws.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { startFakeGithub } from "./support/github.ts";
import { AWS_ENV, resetMoto } from "./support/moto.ts";
import { motoClients, refreshJson } from "./support/pool.ts";
import { type DynamoDBDocumentClient, QueryCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";

async function instanceIds(ddb: DynamoDBDocumentClient): Promise<string[]> {
  const out = await ddb.send(
    new QueryCommand({
      TableName: TABLE,
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: { ":pk": "TYPE#INSTANCE" },
      ConsistentRead: true,
    }),
  );
  return (out.Items ?? []).map((i) => String(i.identifier)).sort();
}

async function recordOf(ddb: DynamoDBDocumentClient, id: string) {
  const { Item } = await ddb.send(
    new GetCommand({ TableName: TABLE, Key: { PK: "TYPE#INSTANCE", SK: `ID#${id}` } }),
  );
  return Item!;
}

const TABLE = "acme-widgets-ci-table";
const MIN = 60_000;

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

/** `ctx` with the warm pool's desired state: the pool's template flags and `args`. */
function warmDesired(ctx: TestContext, args: string[]): TestContext {
  return withDesired(ctx, ctx.desiredFrom(["--only", "warm-pool", ...TEMPLATE_ARGS, ...args]));
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

/** The view's fields of a large on-demand warm pool with no interruption or shortage. */
const LARGE_ON_DEMAND = {
  resourceClass: "large",
  usageClass: "on-demand",
  interrupted: 0,
  fellBack: null,
  capacityShort: false,
  belowMinimum: false,
};

Deno.test("warm pool launches a class's shortfall from the pool's template, idle and unclaimed, advertised only once ready", async () => {
  const ctx = await pool(["--warm-pool", "large=2", "--warm-pool-usage-class", "on-demand"]);
  const first = await run(ctx);
  assert.equal(ctx.counter.counts.get("EC2.CreateFleet"), 1);
  assert.deepEqual(view(first).classes.large, {
    ...LARGE_ON_DEMAND,
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
  const hold = timestamp(new Date(ctx.now().getTime() + 30 * MIN));
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
        instanceType: "m5.large",
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
    instanceType: "m5.large",
    cpu: 2,
    mmem: 4096,
    usageClass: "on-demand",
    threshold: hold,
  }]);
  assert.equal((await record(ctx, a))!.advertisedThreshold, hold);
  assert.equal((await record(ctx, b))!.advertisedThreshold, undefined);
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

  ctx.setNow(new Date(ctx.now().getTime() + 16 * MIN));
  for (const id of ids) await report(ctx, id, "UD_OK");
  const later = await run(ctx);
  // Exactly the keep-alive writes: one conditional update per instance, one batch of messages.
  assert.deepEqual(writes(ctx), { "DynamoDB.UpdateItem": 2, "SQS.SendMessageBatch": 1 });
  const renewed = timestamp(new Date(ctx.now().getTime() + 30 * MIN));
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
  ctx.setNow(new Date(ctx.now().getTime() + 16 * MIN));
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
  const smaller = warmDesired(ctx, [
    "--warm-pool",
    "large=1",
    "--warm-pool-usage-class",
    "on-demand",
  ]);
  smaller.setNow(new Date(ctx.now().getTime() + 16 * MIN));
  for (const id of ids) await report(smaller, id);
  const before = new Map<string, unknown>();
  for (const id of ids) before.set(id, (await record(smaller, id))!.threshold);
  const outcome = await run(smaller);
  assert.equal(view(outcome).classes.large.extra, 2);
  assert.deepEqual(writes(smaller), { "DynamoDB.UpdateItem": 1, "SQS.SendMessageBatch": 1 });
  const kept = outcome.changes.map((c) => c.target.replace("instance ", ""));
  assert.equal(kept.length, 1);
  // The other two keep their old thresholds: past them, they are reaped as today.
  const left = ids.filter((id) => id !== kept[0]);
  for (const id of left) {
    const r = await record(smaller, id);
    assert.equal(r!.threshold, before.get(id));
    assert.equal(r!.threshold, r!.advertisedThreshold);
  }
});

Deno.test("warm pool outside its schedule launches nothing and keeps nothing warm: the pool drains", async () => {
  const [ctx, ids] = await readyPool([], 2);
  // A window that is never now: the day before today, in UTC.
  const yesterday = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][
    (ctx.now().getUTCDay() + 6) % 7
  ];
  const closed = warmDesired(ctx, [
    "--warm-pool",
    "large=2",
    "--warm-pool-schedule",
    `${yesterday} 00:00-24:00 UTC`,
  ]);
  closed.setNow(new Date(ctx.now().getTime() + 15 * MIN));
  for (const id of ids) await report(closed, id);
  const outcome = await run(closed);
  assert.equal(closed.counter.writes(), 0, JSON.stringify(closed.counter.toJSON()));
  assert.deepEqual(view(outcome).classes.large, {
    ...LARGE_ON_DEMAND,
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
      ...LARGE_ON_DEMAND,
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

Deno.test("warm pool counts an instance still removing its runner after a release as booting, a silent old one as unable to serve", async () => {
  const ctx = await pool(["--warm-pool", "large=2", "--warm-pool-usage-class", "on-demand"]);
  await run(ctx);
  const [a, b] = (await instances(ctx)).map((i) => i.InstanceId!);
  // An hour later, past the boot grace: both were released (idle, unclaimed, unexpired).
  ctx.setNow(new Date(ctx.now().getTime() + 60 * MIN));
  for (const id of [a, b]) {
    await ctx.clients.ddb.send(
      new PutCommand({
        TableName: TABLE,
        Item: item("INSTANCE", id, ctx.now(), {
          state: "idle",
          runId: "",
          threshold: timestamp(new Date(ctx.now().getTime() + 5 * MIN)),
          resourceClass: "large",
          instanceType: "m5.large",
          usageClass: "on-demand",
        }),
      }),
    );
  }
  await report(ctx, a, "UD_REG_OK"); // still removing the job's runner, heartbeat fresh
  await report(ctx, b, "UD_OK", 60); // silent for a minute
  const outcome = await run(ctx);
  const large = view(outcome).classes.large;
  assert.deepEqual([large.ready, large.booting, large.unhealthy, large.launched], [0, 1, 1, 1]);
});

Deno.test("warm pool counts instances proven the pool's by EC2's template tag, never another pool's", async () => {
  const [ctx, ids] = await readyPool([], 2);
  // One lost the ownership tag (provision's own tags replaced the template's), the other is
  // tagged for another pool: only the first is still the pool's.
  await ctx.clients.ec2.send(
    new DeleteTagsCommand({ Resources: [ids[0]], Tags: [{ Key: OWNER_TAG }] }),
  );
  await ctx.clients.ec2.send(
    new CreateTagsCommand({
      Resources: [ids[1]],
      Tags: [{ Key: OWNER_TAG, Value: "other-ci-table" }],
    }),
  );
  const outcome = await run(ctx);
  const large = view(outcome).classes.large;
  assert.deepEqual([large.ready, large.launched], [1, 1]);
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

Deno.test("warm pool under a new template version: the reaper drains outdated warm instances at the rollout limit, the warm pool replaces them from the new default", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const own = ["--github-api-url", gh.url, "--rollout-max-per-run", "1"];
  const [ctx, ids] = await readyPool(own, 3);
  const moved = warmDesired(ctx, [
    "--warm-pool",
    "large=3",
    "--warm-pool-usage-class",
    "on-demand",
    ...own,
    "--ami",
    "ami-785db401",
  ]);
  const template = await reconcileLaunchTemplate({ ...moved, dryRun: false });
  assert.ok(template.changes.some((c) => c.action === "new-version"), JSON.stringify(template));
  for (const id of ids) await report(moved, id);

  // The reaper drains one outdated idle instance (the limit), then the warm pool runs.
  const reaped = await reapInstances(moved);
  assert.equal(reaped.found.drained, 1, reaped.summary);
  const outcome = await run(moved);
  const large = view(outcome).classes.large;
  assert.equal(large.ready, 2);
  assert.equal(large.outdated, 2, "the two left still serve until drained");
  assert.equal(large.launched, 1, "one replacement, not three");
  const fresh = (await instances(moved)).filter((i) => !ids.includes(i.InstanceId!));
  assert.equal(fresh.length, 1);
  assert.equal(tags(fresh[0])[TEMPLATE_VERSION_TAG], "2");
  // The two outdated ones were advertised moments ago: nothing to renew, only the launch.
  assert.deepEqual(outcome.changes.map((c) => c.action), ["launch"]);
});

Deno.test("warm pool: a failing launch is reported, the other tasks still run, the next run launches", async () => {
  const network = await resetMoto();
  await using proxy = startFaultProxy({ target: AWS_ENV.AWS_ENDPOINT_URL });
  // The reaper lists the pool's runners: on 127.0.0.1 too.
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  // An on-demand class meeting no capacity: no fallback for it, the run fails, the next one works.
  proxy.respond("EC2.CreateFleet", noCapacity("InsufficientInstanceCapacity", "on-demand"));
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
  const first = await refreshJson(args, { AWS_ENDPOINT_URL: proxy.url });
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
  const second = await refreshJson(args, { AWS_ENDPOINT_URL: proxy.url });
  assert.equal(second.code, 0, JSON.stringify(second.report.results, null, 1));
  const warm = second.report.results.find((r) => r.task === "warm-pool")!;
  assert.equal((warm.found.warm as WarmView).classes.large.launched, 1);
});

/** CreateFleet's answer when EC2 has no capacity for the request: no instance, one error. */
function noCapacity(code: string, lifecycle: string) {
  return {
    status: 200,
    headers: { "content-type": "text/xml;charset=UTF-8" },
    body: `<?xml version="1.0" encoding="UTF-8"?>
<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>5a3f9a4e-0000-4000-8000-000000000001</requestId>
  <fleetId>fleet-0123456789abcdef1</fleetId>
  <errorSet><item>
    <errorCode>${code}</errorCode>
    <errorMessage>We currently do not have sufficient capacity in the Availability Zone you requested.</errorMessage>
    <lifecycle>${lifecycle}</lifecycle>
  </item></errorSet>
  <fleetInstanceSet/>
</CreateFleetResponse>`,
  };
}

for (
  const code of [
    "InsufficientInstanceCapacity",
    "MaxSpotInstanceCountExceeded",
    "UnfulfillableCapacity",
  ]
) {
  Deno.test(`warm pool: a spot launch meeting ${code} falls back to on-demand in the same run, says so, and asks no spot again until the shortage has passed`, async () => {
    const network = await resetMoto();
    await using proxy = startFaultProxy({ target: AWS_ENV.AWS_ENDPOINT_URL });
    await using gh = startFakeGithub({ tokens: [TEST_PAT] });
    const { ddb, destroy } = motoClients();
    try {
      proxy.respond("EC2.CreateFleet", noCapacity(code, "spot"));
      const args = [
        ...baseArgs(network),
        ...TEMPLATE_ARGS,
        "--only",
        "table,launch-template,resource-pools,parameters,warm-pool",
        "--warm-pool",
        "large:spot=1",
        "--github-api-url",
        gh.url,
      ];
      const first = await refreshJson(args, { AWS_ENDPOINT_URL: proxy.url });
      assert.equal(first.code, 0, JSON.stringify(first.report.results, null, 1));
      assert.equal(first.report.calls["EC2.CreateFleet"], 2, "spot, then on-demand");
      const warm = first.report.results.find((r) => r.task === "warm-pool")!;
      const large = (warm.found.warm as WarmView).classes["large:spot"];
      assert.equal(large.launched, 1);
      assert.equal(large.belowMinimum, false, "at its minimum, on-demand");
      assert.equal(large.fellBack?.count, 1);
      assert.match(large.fellBack!.why, new RegExp(`^${code}: `));
      assert.match(
        warm.warnings!.join("\n"),
        new RegExp(
          `large:spot: spot capacity is short \\(${code}: .*\\): 1 launched on-demand instead; spot is asked for again after \\d{4}-`,
        ),
      );
      const [id] = await instanceIds(ddb);
      const record = await recordOf(ddb, id);
      assert.deepEqual([record.usageClass, record.fallbackFrom], ["on-demand", "spot"]);
      const { Item: memory } = await ddb.send(
        new GetCommand({
          TableName: TABLE,
          Key: { PK: "TYPE#REFRESH", SK: "ID#capacity_shortages" },
        }),
      );
      const until = Date.parse(memory!.value["large:spot"].until);
      assert.ok(until > Date.now() + 25 * MIN && until < Date.now() + 31 * MIN, String(until));

      // The fallback instance fails: the next run launches in its place, on-demand at once (no
      // spot request while the shortage lasts: moto would have launched spot).
      await ddb.send(
        new PutCommand({
          TableName: TABLE,
          Item: item("WS", id, new Date(), { value: { state: "UD_FAILED", runId: "warm-x" } }),
        }),
      );
      await ddb.send(
        new UpdateCommand({
          TableName: TABLE,
          Key: { PK: "TYPE#INSTANCE", SK: `ID#${id}` },
          UpdateExpression: "SET updatedAt = :old",
          ExpressionAttributeValues: { ":old": "2020-01-01T00:00:00Z" },
        }),
      );
      const second = await refreshJson(args, { AWS_ENDPOINT_URL: proxy.url });
      assert.equal(second.code, 0, JSON.stringify(second.report.results, null, 1));
      assert.equal(second.report.calls["EC2.CreateFleet"], 1);
      const fresh = (await instanceIds(ddb)).filter((other) => other !== id);
      assert.equal(fresh.length, 1);
      const replacement = await recordOf(ddb, fresh[0]);
      assert.deepEqual([replacement.usageClass, replacement.fallbackFrom], ["on-demand", "spot"]);
    } finally {
      destroy();
    }
  });
}

Deno.test("warm pool under --dry-run on a new account plans its launch and fails nothing", async () => {
  const network = await resetMoto();
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const args = [
    ...baseArgs(network),
    ...TEMPLATE_ARGS,
    "--only",
    "table,launch-template,resource-pools,parameters,warm-pool",
    "--warm-pool",
    "large=2",
    "--github-api-url",
    gh.url,
    "--dry-run",
  ];
  const planned = await refreshJson(args, {});
  assert.equal(planned.code, 0, JSON.stringify(planned.report.results, null, 1));
  assert.equal(planned.report.writeCalls, 0, JSON.stringify(planned.report.calls));
  const warm = planned.report.results.find((r) => r.task === "warm-pool")!;
  assert.equal(warm.status, "planned");
  assert.deepEqual(warm.changes.map((c) => [c.action, c.target]), [[
    "launch",
    "2 large instances",
  ]]);
  assert.match(
    warm.changes[0].detail!,
    /^once the other tasks have written it: no launch template/,
  );
});
