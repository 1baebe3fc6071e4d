import assert from "node:assert/strict";
import {
  CreateFleetCommand,
  DescribeInstancesCommand,
  RunInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { GetCommand, PutCommand, UpdateCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, OWNER_TAG, timestamp } from "../lib/contract.ts";
import { reconcileLaunchTemplate } from "../lib/launch_template.ts";
import { type ReaperCounts, reapInstances } from "../lib/reaper.ts";
import { reconcileTable } from "../lib/table.ts";
import { type FakeGithub, type FakeRunner, startFakeGithub } from "./support/github.ts";
import {
  BASE_ARGS,
  baseArgs,
  desiredFrom,
  TEMPLATE_ARGS,
  TEST_PAT,
  type TestContext,
  testContext,
  withDesired,
} from "./support/aws.ts";
import { AWS_ENV } from "./support/moto.ts";
import { checkRefused, type InvalidInput } from "./support/refused.ts";
import { main } from "../refresh.ts";
import {
  type Heartbeat,
  limitFor,
  NO_CLASS,
  parseMaxPerRun,
  planRollout,
  type PoolInstance,
  type PoolReading,
  poolTable,
  type PoolView,
  type RecordRow,
  type RolloutInputs,
  TEMPLATE_ID_TAG,
  TEMPLATE_VERSION_TAG,
  type TemplateDefault,
  versionOf,
  type WorkerSignal,
} from "../lib/rollout.ts";

const NOW = new Date("2026-01-15T12:00:00Z");
const TEMPLATE: TemplateDefault = { id: "lt-0123456789abcdef0", version: 2, ami: "ami-22222222" };
const INPUTS: RolloutInputs = {
  maxPerRun: { percent: 25 },
  heartbeatStaleSec: 300,
  bootGraceMin: 15,
};

/** A timestamp `minutes` from NOW. */
function at(minutes: number): string {
  return new Date(NOW.getTime() + minutes * 60_000).toISOString().replace(/\.\d+Z$/, "Z");
}

interface Spec {
  id: string;
  state?: string;
  cls?: string;
  version?: number | null;
  templateId?: string;
  image?: string;
  launchedMin?: number;
  heartbeatMin?: number | null;
  signal?: string;
  threshold?: string;
  runId?: string;
}

/** A reading of the pool from compact specs: each instance alive in EC2 with a fresh heartbeat. */
function reading(specs: Spec[], extra: Partial<PoolReading> = {}): PoolReading {
  const records: RecordRow[] = [];
  const instances = new Map<string, PoolInstance>();
  const heartbeats = new Map<string, Heartbeat>();
  const signals = new Map<string, WorkerSignal>();
  for (const s of specs) {
    records.push({
      id: s.id,
      state: s.state ?? "idle",
      threshold: s.threshold ?? at(5),
      runId: s.runId ?? "",
      resourceClass: s.cls ?? "large",
    });
    const version = s.version === undefined ? 1 : s.version;
    instances.set(s.id, {
      id: s.id,
      launchTime: at(s.launchedMin ?? -60),
      imageId: s.image ?? (version === 2 ? TEMPLATE.ami : "ami-11111111"),
      tags: version === null ? {} : {
        [TEMPLATE_ID_TAG]: s.templateId ?? TEMPLATE.id,
        [TEMPLATE_VERSION_TAG]: String(version),
        "refresh:pool": "acme-widgets-ci-table",
      },
    });
    if (s.heartbeatMin !== null) {
      heartbeats.set(s.id, { id: s.id, updatedAt: at(s.heartbeatMin ?? 0) });
    }
    if (s.signal) signals.set(s.id, { id: s.id, state: s.signal, runId: "", updatedAt: at(-1) });
  }
  return {
    records,
    instances,
    heartbeats,
    signals,
    template: TEMPLATE,
    taken: new Set(),
    now: NOW,
    ...extra,
  };
}

const ids = (plan: { drains: { id: string }[] }) => plan.drains.map((d) => d.id);

Deno.test("parseMaxPerRun takes a whole number or a whole percentage", () => {
  assert.deepEqual(parseMaxPerRun("3"), { count: 3 });
  assert.deepEqual(parseMaxPerRun("0"), { count: 0 });
  assert.deepEqual(parseMaxPerRun("25%"), { percent: 25 });
  assert.deepEqual(parseMaxPerRun(" 100% "), { percent: 100 });
  for (const bad of ["101%", "-1", "2.5", "x", "", "%", "1e3", "25 percent"]) {
    const result = parseMaxPerRun(bad);
    assert.equal(typeof result, "string", bad);
    assert.match(result as string, /expected a whole number >= 0 or a percentage/);
    assert.ok((result as string).includes(JSON.stringify(bad)), result as string);
  }
});

Deno.test("limitFor rounds a percentage up, so a small class still moves", () => {
  assert.equal(limitFor({ percent: 25 }, 8), 2);
  assert.equal(limitFor({ percent: 25 }, 9), 3);
  assert.equal(limitFor({ percent: 25 }, 1), 1);
  assert.equal(limitFor({ percent: 25 }, 0), 0);
  assert.equal(limitFor({ percent: 0 }, 50), 0);
  assert.equal(limitFor({ count: 4 }, 2), 4);
});

Deno.test("versionOf reads EC2's launch template tags, then falls back to the image", () => {
  const instance = (tags: Record<string, string>, imageId?: string): PoolInstance => ({
    id: "i-1",
    tags,
    imageId,
  });
  const tags = (id: string, version: string) => ({
    [TEMPLATE_ID_TAG]: id,
    [TEMPLATE_VERSION_TAG]: version,
  });
  assert.deepEqual(versionOf(instance(tags(TEMPLATE.id, "2"), "ami-other"), TEMPLATE), {
    kind: "current",
    by: "tag",
  });
  assert.deepEqual(versionOf(instance(tags(TEMPLATE.id, "1"), TEMPLATE.ami), TEMPLATE), {
    kind: "outdated",
    by: "tag",
    detail: "launched from version 1, the default is 2",
  });
  // A default moved back to an older version: the newer instances are not the default either.
  assert.equal(versionOf(instance(tags(TEMPLATE.id, "3")), TEMPLATE).kind, "outdated");
  const other = versionOf(instance(tags("lt-0fffffffffffffff0", "2")), TEMPLATE);
  assert.equal(other.kind, "outdated");
  assert.match(
    (other as { detail: string }).detail,
    /template lt-0fffffffffffffff0 version 2, not lt-/,
  );
  assert.equal(versionOf(instance(tags(TEMPLATE.id, "$Default")), TEMPLATE).kind, "unknown");
  assert.deepEqual(versionOf(instance({}, TEMPLATE.ami), TEMPLATE), {
    kind: "current",
    by: "image",
  });
  const byImage = versionOf(instance({}, "ami-11111111"), TEMPLATE);
  assert.equal(byImage.kind, "outdated");
  assert.match((byImage as { detail: string }).detail, /runs ami-11111111.*judged by image/);
  assert.equal(versionOf(instance({}), TEMPLATE).kind, "unknown");
  // One of the two tags alone is not EC2's stamp: the image decides.
  assert.deepEqual(
    versionOf(instance({ [TEMPLATE_VERSION_TAG]: "1" }, TEMPLATE.ami), TEMPLATE),
    { kind: "current", by: "image" },
  );
});

Deno.test("planRollout drains at most the limit of outdated idle instances per class, oldest first", () => {
  const specs: Spec[] = [];
  for (let i = 0; i < 8; i++) specs.push({ id: `i-l${i}`, launchedMin: -100 + i });
  for (let i = 0; i < 3; i++) specs.push({ id: `i-x${i}`, cls: "xlarge", launchedMin: -10 - i });
  specs.push({ id: "i-new", version: 2, launchedMin: -500 });

  const plan = planRollout(reading(specs), INPUTS);

  // large: 9 idle can serve, 25% rounded up = 3; xlarge: 3 idle, 1.
  assert.deepEqual(ids(plan), ["i-l0", "i-l1", "i-l2", "i-x2"]);
  assert.ok(plan.drains.every((d) => d.kind === "outdated"));
  assert.equal(plan.drains[0].detail, "launched from version 1, the default is 2");
  assert.equal(plan.view.classes.large.deferred, 5);
  assert.equal(plan.view.classes.xlarge.deferred, 2);
  assert.deepEqual(plan.warnings, []);
});

Deno.test("planRollout with a count limit takes that many per class; 0 turns rollout off", () => {
  const specs: Spec[] = [1, 2, 3, 4].map((n) => ({ id: `i-${n}`, launchedMin: -n }));
  specs.push({ id: "i-sick", heartbeatMin: -30 });

  const two = planRollout(reading(specs), { ...INPUTS, maxPerRun: { count: 2 } });
  assert.deepEqual(ids(two), ["i-sick", "i-4", "i-3"]);

  const off = planRollout(reading(specs), { ...INPUTS, maxPerRun: { count: 0 } });
  assert.deepEqual(ids(off), ["i-sick"], "health still drains with rollout off");
  assert.equal(off.view.classes.large.deferred, 4);
  assert.equal(off.view.classes.large.outdated, 5);
});

Deno.test("planRollout never drains a claimed, running or created instance, however outdated", () => {
  const plan = planRollout(
    reading([
      { id: "i-claimed", state: "claimed", runId: "run-1", signal: "UD_REG_FAILED" },
      { id: "i-running", state: "running", runId: "run-2", heartbeatMin: -60 },
      { id: "i-created", state: "created", runId: "run-3", heartbeatMin: null, launchedMin: -90 },
      { id: "i-terminated", state: "terminated" },
    ]),
    { ...INPUTS, maxPerRun: { percent: 100 } },
  );

  assert.deepEqual(plan.drains, []);
  const large = plan.view.classes.large;
  assert.deepEqual(
    [large.idle, large.claimed, large.running, large.created, large.outdated, large.unhealthy],
    [0, 1, 1, 1, 3, 0],
  );
});

Deno.test("planRollout drains unhealthy idle instances beyond the limit and leaves booting ones", () => {
  const plan = planRollout(
    reading([
      { id: "i-failed", version: 2, signal: "UD_REMOVE_REG_FAILED" },
      { id: "i-stale", version: 2, heartbeatMin: -6 },
      { id: "i-fresh", version: 2, heartbeatMin: -4 },
      { id: "i-silent", version: 2, heartbeatMin: null, launchedMin: -16 },
      { id: "i-booting", version: 1, heartbeatMin: null, launchedMin: -14 },
      { id: "i-ok-signal", version: 2, signal: "UD_REMOVE_REG_REMOVE_RUN_OK" },
    ]),
    { ...INPUTS, maxPerRun: { count: 0 } },
  );

  assert.deepEqual(
    plan.drains.map((d) => [d.id, d.kind]),
    [["i-failed", "failed-signal"], ["i-silent", "no-heartbeat"], ["i-stale", "stale-heartbeat"]],
  );
  const detail = Object.fromEntries(plan.drains.map((d) => [d.id, d.detail]));
  assert.equal(detail["i-failed"], `worker signal UD_REMOVE_REG_FAILED at ${at(-1)}`);
  assert.equal(detail["i-stale"], `last heartbeat at ${at(-6)}, more than 300 s ago`);
  assert.equal(detail["i-silent"], `no heartbeat since launch at ${at(-16)}, more than 15 min ago`);
  const large = plan.view.classes.large;
  assert.equal(large.unhealthy, 3);
  assert.equal(large.booting, 1);
  assert.equal(large.idle, 6);
});

Deno.test("planRollout drains a booting outdated instance by the rollout rule, never as unhealthy", () => {
  const plan = planRollout(
    reading([{ id: "i-booting", heartbeatMin: null, launchedMin: -1 }]),
    { ...INPUTS, maxPerRun: { count: 1 } },
  );
  assert.deepEqual(plan.drains.map((d) => [d.id, d.kind]), [["i-booting", "outdated"]]);
  assert.equal(plan.view.classes.large.booting, 1);
  assert.equal(plan.view.classes.large.unhealthy, 0);
});

Deno.test("planRollout with the heartbeat limit 0 judges only worker signals", () => {
  const plan = planRollout(
    reading([
      { id: "i-stale", version: 2, heartbeatMin: -600 },
      { id: "i-silent", version: 2, heartbeatMin: null, launchedMin: -600 },
      { id: "i-failed", version: 2, signal: "UD_FAILED" },
    ]),
    { ...INPUTS, heartbeatStaleSec: 0 },
  );
  assert.deepEqual(ids(plan), ["i-failed"]);
});

Deno.test("planRollout leaves alone what the reaper already takes and what is not among the pool's instances", () => {
  const r = reading([
    { id: "i-expired", threshold: at(-1), signal: "UD_REG_FAILED" },
    { id: "i-untagged", heartbeatMin: -60 },
    { id: "i-outdated" },
  ]);
  r.taken.add("i-expired");
  r.instances.delete("i-untagged");

  const plan = planRollout(r, { ...INPUTS, maxPerRun: { percent: 100 } });

  assert.deepEqual(ids(plan), ["i-outdated"]);
  assert.equal(plan.view.classes.large.unknownVersion, 1);
  assert.equal(plan.view.classes.large.idle, 3);
});

Deno.test("planRollout keeps the lock's condition values as read", () => {
  const plan = planRollout(
    reading([{ id: "i-1", threshold: "2026-01-15T12:05:00Z", runId: "" }]),
    INPUTS,
  );
  const [drain] = plan.drains;
  assert.deepEqual(
    [drain.state, drain.threshold, drain.runId, drain.resourceClass],
    ["idle", "2026-01-15T12:05:00Z", "", "large"],
  );
});

Deno.test("planRollout without a template judges health only and counts every version unknown", () => {
  const plan = planRollout(
    reading([{ id: "i-old" }, { id: "i-stale", heartbeatMin: -10 }], { template: null }),
    { ...INPUTS, maxPerRun: { percent: 100 } },
  );
  assert.deepEqual(ids(plan), ["i-stale"]);
  assert.equal(plan.view.template, null);
  const large = plan.view.classes.large;
  assert.deepEqual([large.current, large.outdated, large.unknownVersion], [0, 0, 2]);
});

Deno.test("planRollout warns about a heartbeat timestamp it cannot read and does not drain for it", () => {
  const r = reading([{ id: "i-odd", version: 2 }]);
  r.heartbeats.set("i-odd", { id: "i-odd", updatedAt: "1700000000" });
  const plan = planRollout(r, INPUTS);
  assert.deepEqual(plan.drains, []);
  assert.deepEqual(plan.warnings, [
    'heartbeat of i-odd has updatedAt "1700000000"; expected a timestamp like 2025-04-24T18:31:04Z, so its health is not judged',
  ]);
});

Deno.test("planRollout builds the pool view per class: states, versions, health, oldest age", () => {
  const r = reading([
    { id: "i-a", version: 2, launchedMin: -30 },
    { id: "i-b", launchedMin: -200 },
    { id: "i-c", state: "claimed", runId: "run-1", version: 2, launchedMin: -5 },
    { id: "i-d", state: "running", runId: "run-2", version: null, image: TEMPLATE.ami },
    { id: "i-e", cls: "xlarge", state: "created", runId: "run-3", version: 1, launchedMin: -3000 },
    { id: "i-f", cls: "", heartbeatMin: -20, version: 2, launchedMin: -2 },
  ]);

  const plan = planRollout(r, { ...INPUTS, maxPerRun: { count: 0 } });

  assert.deepEqual(Object.keys(plan.view.classes), [NO_CLASS, "large", "xlarge"]);
  assert.deepEqual(plan.view.classes.large, {
    idle: 2,
    claimed: 1,
    running: 1,
    created: 0,
    current: 3,
    outdated: 1,
    unknownVersion: 0,
    unhealthy: 0,
    booting: 0,
    deferred: 1,
    oldestLaunch: at(-200),
    oldestAgeMin: 200,
  });
  assert.equal(plan.view.classes.xlarge.oldestAgeMin, 3000);
  assert.equal(plan.view.classes[NO_CLASS].unhealthy, 1);
  assert.deepEqual(plan.view.template, TEMPLATE);
  assert.deepEqual(poolTable(plan.view), [
    [
      "class",
      "idle",
      "claimed",
      "running",
      "created",
      "current",
      "outdated",
      "unknown",
      "unhealthy",
      "booting",
      "oldest",
    ],
    [NO_CLASS, "1", "0", "0", "0", "1", "0", "0", "1", "0", "2 min"],
    ["large", "2", "1", "1", "0", "3", "1 (1 left)", "0", "0", "0", "3 h"],
    ["xlarge", "0", "0", "0", "1", "0", "1", "0", "0", "0", "2 d"],
  ]);
});

Deno.test("planRollout of a converged pool drains nothing", () => {
  const specs: Spec[] = Array.from({ length: 20 }, (_, i) => ({
    id: `i-${i}`,
    version: 2,
    state: i % 3 ? "idle" : "running",
  }));
  const plan = planRollout(reading(specs), { ...INPUTS, maxPerRun: { percent: 100 } });
  assert.deepEqual(plan.drains, []);
  assert.equal(plan.view.classes.large.current, 20);
  assert.equal(plan.view.classes.large.deferred, 0);
});

Deno.test("planRollout compares heartbeat times as times, fractional seconds included", () => {
  const r = reading([{ id: "i-edge", version: 2 }, { id: "i-past", version: 2 }]);
  r.heartbeats.set("i-edge", { id: "i-edge", updatedAt: "2026-01-15T11:55:00.500Z" });
  r.heartbeats.set("i-past", { id: "i-past", updatedAt: "2026-01-15T11:54:59.999Z" });
  assert.deepEqual(ids(planRollout(r, INPUTS)), ["i-past"]);
});

// ---------------------------------------------------------------------------------------------
// The reaper's rollout and health drains, end to end against moto and the fake GitHub: the
// launch-template task makes the template, instances launch from it as fleet-actions' provision
// launches them (CreateFleet, instant, $Default), and the reaper drains.

const TABLE = "acme-widgets-ci-table";
const OLD_AMI = "ami-1e749f67";
const NEW_AMI = "ami-785db401";
const MIN = 60_000;

/** The reaper's context on a fresh account: table, launch template version 1, fake GitHub. */
async function pool(gh: FakeGithub, args: string[] = []): Promise<TestContext> {
  // Every run lists the whole pool: the rollout is judged on a complete pool view.
  const ctx = await testContext([
    "--only",
    "reaper",
    "--github-api-url",
    gh.url,
    "--sweep",
    "always",
    ...TEMPLATE_ARGS,
    ...args,
  ]);
  await reconcileTable({ ...ctx, dryRun: false });
  await reconcileLaunchTemplate({ ...ctx, dryRun: false });
  // moto stamps launch times with the real clock: the run happens an hour later.
  ctx.setNow(new Date(Date.now() + 60 * MIN));
  return ctx;
}

/** Makes `ami` the template's new default version, as a changed --ami does. */
async function moveDefault(ctx: TestContext, ami: string): Promise<void> {
  const desired = ctx.desiredFrom([...TEMPLATE_ARGS, "--ami", ami]);
  const out = await reconcileLaunchTemplate({ ...withDesired(ctx, desired), dryRun: false });
  assert.ok(out.changes.some((c) => c.action === "new-version"), JSON.stringify(out.changes));
}

/** Launches `count` instances from the template's default version, as provision does. */
async function provision(ctx: TestContext, count: number): Promise<string[]> {
  const out = await ctx.clients.ec2.send(
    new CreateFleetCommand({
      Type: "instant",
      LaunchTemplateConfigs: [{
        LaunchTemplateSpecification: {
          LaunchTemplateName: ctx.desired.launchTemplate.name,
          Version: "$Default",
        },
        Overrides: [{ InstanceType: "t3.micro", SubnetId: ctx.network.subnetIds[0] }],
      }],
      TargetCapacitySpecification: {
        TotalTargetCapacity: count,
        DefaultTargetCapacityType: "on-demand",
      },
      TagSpecifications: [{
        ResourceType: "instance",
        Tags: [{ Key: "AllowSelfTermination", Value: "true" }, { Key: "InitialRunId", Value: "1" }],
      }],
    }),
  );
  assert.deepEqual(out.Errors ?? [], []);
  return out.Instances!.flatMap((i) => i.InstanceIds!);
}

interface Seed {
  state?: string;
  runId?: string;
  thresholdMin?: number;
  cls?: string;
  /** Minutes from now of the last heartbeat; null: none. */
  heartbeatMin?: number | null;
  signal?: string;
}

/** Writes an instance's record, heartbeat and worker signal as the pool's programs do. */
async function seed(ctx: TestContext, ids: string[], s: Seed = {}): Promise<void> {
  const now = ctx.now().getTime();
  for (const id of ids) {
    const put = (entity: "INSTANCE" | "HEARTBEAT" | "WS", at: number, attrs: object) =>
      ctx.clients.ddb.send(
        new PutCommand({ TableName: TABLE, Item: item(entity, id, new Date(at), { ...attrs }) }),
      );
    const state = s.state ?? "idle";
    await put("INSTANCE", now - 10 * MIN, {
      state,
      threshold: timestamp(new Date(now + (s.thresholdMin ?? 50) * MIN)),
      runId: s.runId ?? "",
      resourceClass: s.cls ?? "large",
      instanceType: "t3.micro",
      usageClass: "on-demand",
    });
    if (s.heartbeatMin !== null) {
      await put("HEARTBEAT", now + (s.heartbeatMin ?? 0) * MIN, { value: "PING" });
    }
    await put("WS", now - 5 * MIN, {
      value: { state: s.signal ?? "UD_REMOVE_REG_REMOVE_RUN_OK", runId: s.runId ?? "run-0" },
    });
  }
}

async function ec2States(ctx: TestContext, ids: string[]): Promise<Record<string, string>> {
  const out = await ctx.clients.ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }));
  return Object.fromEntries(
    out.Reservations!.flatMap((r) => r.Instances!).map((i) => [i.InstanceId!, i.State!.Name!]),
  );
}

async function alive(ctx: TestContext, ids: string[]): Promise<string[]> {
  const states = await ec2States(ctx, ids);
  return ids.filter((id) => states[id] === "running").sort();
}

/** Ids oldest launch first, the id breaking ties (the rollout's order). */
async function byLaunch(ctx: TestContext, ids: string[]): Promise<string[]> {
  const out = await ctx.clients.ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }));
  return out.Reservations!.flatMap((r) => r.Instances!)
    .map((i) => [i.LaunchTime!.getTime(), i.InstanceId!] as const)
    .sort(([t1, a], [t2, b]) => t1 - t2 || a.localeCompare(b)).map(([, id]) => id);
}

async function recordOf(ctx: TestContext, id: string) {
  const out = await ctx.clients.ddb.send(
    new GetCommand({ TableName: TABLE, Key: { PK: "TYPE#INSTANCE", SK: `ID#${id}` } }),
  );
  return out.Item;
}

const found = (outcome: { found: Record<string, unknown> }) =>
  outcome.found as unknown as ReaperCounts & { pool: PoolView };
const drained = (outcome: { changes: { action: string; target: string }[] }) =>
  outcome.changes.filter((c) => c.action === "drain").map((c) => c.target.replace("instance ", ""))
    .sort();
const sorted = (list: string[]) => [...list].sort();

Deno.test("reaper drains at most --rollout-max-per-run outdated idle instances per run, never a claimed or running one, and repeated runs finish the rollout", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await pool(gh, ["--rollout-max-per-run", "2"]);
  const idle = await provision(ctx, 5);
  const [claimed, running] = await provision(ctx, 2);
  await moveDefault(ctx, NEW_AMI);
  const current = await provision(ctx, 2);
  // Launched without the template (tagged by hand): only its image tells its version.
  const [untemplated] = (await ctx.clients.ec2.send(
    new RunInstancesCommand({
      ImageId: OLD_AMI,
      MinCount: 1,
      MaxCount: 1,
      InstanceType: "t3.micro",
      TagSpecifications: [{ ResourceType: "instance", Tags: [{ Key: OWNER_TAG, Value: TABLE }] }],
    }),
  )).Instances!.map((i) => i.InstanceId!);
  await seed(ctx, [untemplated], { cls: "xlarge" });
  await seed(ctx, [...idle, ...current]);
  await seed(ctx, [claimed], { state: "claimed", runId: "run-1", thresholdMin: 4 });
  await seed(ctx, [running], { state: "running", runId: "run-2", thresholdMin: 30 });
  ctx.counter.reset();

  const first = await reapInstances(ctx);

  const taken = drained(first).filter((id) => id !== untemplated);
  assert.equal(taken.length, 2);
  assert.ok(taken.every((id) => idle.includes(id)), `${taken}`);
  assert.deepEqual(drained(first), sorted([...taken, untemplated]));
  assert.deepEqual(await alive(ctx, [...taken, untemplated]), []);
  assert.equal(ctx.counter.counts.get("EC2.TerminateInstances"), 1);
  const counts = found(first);
  assert.deepEqual(
    [counts.outdated, counts.drained, counts.locked, counts.outdatedLeft, counts.unhealthy],
    [3, 3, 3, 3, 0],
  );
  const details = Object.fromEntries(first.changes.map((c) => [c.target, c.detail]));
  assert.equal(
    details[`instance ${taken[0]}`],
    "rollout: idle large instance, launched from version 1, the default is 2",
  );
  assert.equal(
    details[`instance ${untemplated}`],
    `rollout: idle xlarge instance, runs ${OLD_AMI}, the default version 2 has ${NEW_AMI} (no launch template tags: judged by image)`,
  );
  assert.deepEqual(await recordOf(ctx, taken[0]), undefined, "record expunged");
  assert.deepEqual(
    await alive(ctx, [claimed, running, ...current]),
    sorted([claimed, running, ...current]),
  );
  assert.equal((await recordOf(ctx, claimed))?.state, "claimed");
  assert.equal((await recordOf(ctx, running))?.runId, "run-2");
  assert.deepEqual(first.found.pool, found(first).pool);
  const large = found(first).pool.classes.large;
  assert.deepEqual(
    [large.idle, large.claimed, large.running, large.current, large.outdated, large.deferred],
    [7, 1, 1, 2, 7, 3],
  );

  const second = await reapInstances(ctx);
  const third = await reapInstances(ctx);
  assert.deepEqual([drained(second).length, drained(third).length], [2, 1]);
  assert.deepEqual(await alive(ctx, idle), []);
  ctx.counter.reset();

  const fourth = await reapInstances(ctx);

  assert.deepEqual(fourth.changes, []);
  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(
    [found(fourth).pool.classes.large.outdated, found(fourth).pool.classes.large.current],
    [2, 2],
    "the claimed and running instances wait for release",
  );

  // release puts the running instance back in the pool: the next run drains it.
  await seed(ctx, [running], { state: "idle" });
  const fifth = await reapInstances(ctx);
  assert.deepEqual(drained(fifth), [running]);
  assert.deepEqual(await alive(ctx, [claimed, running, ...current]), sorted([claimed, ...current]));
});

Deno.test("reaper's rollout leaves alone an idle instance claimed between the read and the lock", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await pool(gh, ["--rollout-max-per-run", "100%", "--reap-concurrency", "1"]);
  const ids = await provision(ctx, 2);
  await moveDefault(ctx, NEW_AMI);
  await seed(ctx, ids);
  // provision claims the first instance the reaper locks, right before its conditional update
  // reaches DynamoDB.
  let raced: string | undefined;
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => async (args) => {
      if (!raced && /^Update/.test(context.commandName ?? "")) {
        const input = args.input as { Key: { SK: string } };
        raced = input.Key.SK.replace("ID#", "");
        await ctx.clients.ddb.send(
          new UpdateCommand({
            TableName: TABLE,
            Key: input.Key,
            UpdateExpression: "SET #s = :claimed, runId = :run, threshold = :t",
            ConditionExpression: "#s = :idle",
            ExpressionAttributeNames: { "#s": "state" },
            ExpressionAttributeValues: {
              ":claimed": "claimed",
              ":idle": "idle",
              ":run": "run-9",
              ":t": timestamp(new Date(ctx.now().getTime() + 5 * MIN)),
            },
          }),
        );
      }
      return next(args);
    },
    { step: "initialize", name: "provisionClaims" },
  );

  const outcome = await reapInstances(ctx);

  assert.ok(raced && ids.includes(raced), `${raced}`);
  const other = ids.find((id) => id !== raced)!;
  assert.equal(found(outcome).lostRace, 1);
  assert.deepEqual(drained(outcome), [other]);
  assert.deepEqual(await ec2States(ctx, ids), { [raced]: "running", [other]: "terminated" });
  const kept = await recordOf(ctx, raced);
  assert.deepEqual([kept?.state, kept?.runId], ["claimed", "run-9"]);
});

Deno.test("reaper drains idle instances with a stale heartbeat or a failed worker signal, and leaves booting ones until the grace period ends", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await pool(gh, ["--heartbeat-stale-sec", "120", "--boot-grace-min", "10"]);
  const [stale, failed, fresh, booting, busy] = await provision(ctx, 5);
  const launched = Date.parse(
    (await ctx.clients.ec2.send(new DescribeInstancesCommand({ InstanceIds: [booting] })))
      .Reservations![0].Instances![0].LaunchTime!.toISOString(),
  );
  ctx.setNow(new Date(launched + 5 * MIN));
  await seed(ctx, [stale], { heartbeatMin: -3 });
  await seed(ctx, [failed], { signal: "UD_REG_FAILED", runId: "run-4" });
  await seed(ctx, [fresh], { heartbeatMin: -1 });
  await seed(ctx, [booting], { heartbeatMin: null });
  await seed(ctx, [busy], { state: "running", runId: "run-5", heartbeatMin: -30 });

  const first = await reapInstances(ctx);

  assert.deepEqual(drained(first), sorted([stale, failed]));
  const details = Object.fromEntries(first.changes.map((c) => [c.target, c.detail]));
  assert.match(
    details[`instance ${stale}`]!,
    /^unhealthy: idle large instance, last heartbeat at .*, more than 120 s ago$/,
  );
  assert.equal(
    details[`instance ${failed}`],
    `unhealthy: idle large instance, worker signal UD_REG_FAILED for run run-4 at ${
      timestamp(new Date(ctx.now().getTime() - 5 * MIN))
    }`,
  );
  assert.deepEqual(
    await alive(ctx, [stale, failed, fresh, booting, busy]),
    sorted([fresh, booting, busy]),
  );
  const large = found(first).pool.classes.large;
  assert.deepEqual([large.unhealthy, large.booting, large.outdated, large.current], [2, 1, 0, 5]);
  assert.equal(found(first).outdated, 0);

  // Ten minutes after launch, a silent instance is no longer booting.
  ctx.setNow(new Date(launched + 11 * MIN));
  await seed(ctx, [fresh], { heartbeatMin: 0 });
  const second = await reapInstances(ctx);
  assert.deepEqual(drained(second), [booting]);
  assert.match(second.changes[0].detail!, /no heartbeat since launch at .*, more than 10 min ago/);
  assert.deepEqual(await alive(ctx, [fresh, booting, busy]), sorted([fresh, busy]));
});

Deno.test("reaper under dry-run lists which instances rollout and health would drain and why, and writes nothing", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await pool(gh, ["--dry-run", "--rollout-max-per-run", "1"]);
  const [a, b, sick] = await provision(ctx, 3);
  await moveDefault(ctx, NEW_AMI);
  await seed(ctx, [a, b]);
  await seed(ctx, [sick], { signal: "UD_REMOVE_REG_FAILED" });
  runners.push({ id: 1, name: `${sick}-1`, status: "online", busy: false });
  ctx.counter.reset();

  const outcome = await reapInstances(ctx);

  assert.equal(ctx.counter.writes(), 0);
  const [oldest] = await byLaunch(ctx, [a, b]);
  const planned = outcome.changes.map((c) => [c.action, c.target, c.detail]);
  assert.deepEqual(planned.slice(0, 2), [
    [
      "drain",
      `instance ${sick}`,
      `unhealthy: idle large instance, worker signal UD_REMOVE_REG_FAILED for run run-0 at ${
        timestamp(new Date(ctx.now().getTime() - 5 * MIN))
      }`,
    ],
    [
      "drain",
      `instance ${oldest}`,
      "rollout: idle large instance, launched from version 1, the default is 2",
    ],
  ]);
  assert.deepEqual(planned[2], [
    "delete-runner",
    `runner ${sick}-1 (#1)`,
    `instance ${sick}: would be terminated by this run`,
  ]);
  assert.match(
    outcome.summary,
    /^3 changes would be made: 1 outdated, 1 unhealthy, 1 outdated left for later runs/,
  );
  assert.deepEqual(await alive(ctx, [a, b, sick]), sorted([a, b, sick]));
  assert.equal((await recordOf(ctx, sick))?.state, "idle");
  assert.equal(runners.length, 1);
});

Deno.test("reaper's rollout inputs default to 25%, 300 s and 15 min, and take a number from a config file", () => {
  assert.deepEqual(desiredFrom([]).reaper.rollout, {
    maxPerRun: { percent: 25 },
    heartbeatStaleSec: 300,
    bootGraceMin: 15,
  });
  assert.deepEqual(desiredFrom(["--rollout-max-per-run", "0"]).reaper.rollout.maxPerRun, {
    count: 0,
  });
  const fromFile = desiredFrom(["--config", "c.json"], { GITHUB_TOKEN: TEST_PAT }, {
    "c.json": JSON.stringify({ "rollout-max-per-run": 3, "heartbeat-stale-sec": 0 }),
  });
  assert.deepEqual(fromFile.reaper.rollout, {
    maxPerRun: { count: 3 },
    heartbeatStaleSec: 0,
    bootGraceMin: 15,
  });
});

Deno.test("refresh --only reaper prints the pool view as a table, and --json holds it in found.pool", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await pool(gh);
  ctx.setNow(new Date()); // main() runs on the real clock
  const ids = await provision(ctx, 3);
  await seed(ctx, ids.slice(0, 2));
  await seed(ctx, ids.slice(2), { state: "running", runId: "run-1", cls: "xlarge" });
  const run = async (...flags: string[]) => {
    const stdout: string[] = [];
    const code = await main(
      [
        ...baseArgs(ctx.network),
        ...TEMPLATE_ARGS,
        "--only",
        "reaper",
        "--github-api-url",
        gh.url,
        // The pool view is complete on a sweep.
        "--sweep",
        "always",
        ...flags,
      ],
      { ...AWS_ENV, GITHUB_TOKEN: TEST_PAT },
      { stdout: (t) => stdout.push(t), stderr: () => {}, readTextFile: () => "" },
    );
    assert.equal(code, 0, stdout.join("\n"));
    return stdout.join("\n");
  };

  const text = await run();

  assert.match(
    text,
    /^ {2}pool, against the launch template lt-[0-9a-f]+ default version 1 \(ami-1e749f67\):$/m,
  );
  assert.match(
    text,
    /^ {4}class +idle +claimed +running +created +current +outdated +unknown +unhealthy +booting +oldest$/m,
  );
  assert.match(text, /^ {4}large +2 +0 +0 +0 +2 +0 +0 +0 +0 +0 min$/m);
  assert.match(text, /^ {4}xlarge +0 +0 +1 +0 +1 +0 +0 +0 +0 +0 min$/m);
  const report = JSON.parse(await run("--json"));
  const view = report.results[0].found.pool as PoolView;
  assert.deepEqual(Object.keys(view.classes), ["large", "xlarge"]);
  assert.equal(view.classes.large.current, 2);
  assert.equal(view.template?.version, 1);
  assert.equal(report.writeCalls, 0);
});

Deno.test("reaper still reaps and judges health when the template's default version cannot be read", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await pool(gh);
  const [expired, sick, old] = await provision(ctx, 3);
  await moveDefault(ctx, NEW_AMI);
  await seed(ctx, [expired], { thresholdMin: -1 });
  await seed(ctx, [sick], { signal: "UD_FAILED" });
  await seed(ctx, [old]);
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "DescribeLaunchTemplateVersionsCommand") {
        throw Object.assign(new Error("not authorized to describe launch template versions"), {
          name: "UnauthorizedOperation",
        });
      }
      return next(args);
    },
    { step: "initialize", name: "denyVersions" },
  );

  const outcome = await reapInstances(ctx);

  assert.deepEqual(await alive(ctx, [expired, sick, old]), [old]);
  assert.deepEqual(drained(outcome), [sick]);
  assert.equal(found(outcome).pool.template, null);
  assert.deepEqual(outcome.warnings, [
    `template versions not judged (no rollout this run): reading the default version of ${ctx.desired.launchTemplate.name} failed: UnauthorizedOperation: not authorized to describe launch template versions`,
  ]);
});

const INVALID: InvalidInput[] = [
  [
    "rollout limit neither a number nor a percentage",
    [...BASE_ARGS, "--rollout-max-per-run", "150%"],
    undefined,
    /rollout-max-per-run: expected a whole number >= 0 or a percentage 0%-100% \(like 25%\), got "150%"/,
  ],
  [
    "rollout limit fractional in a config file",
    [...BASE_ARGS, "--config", "rollout.json"],
    undefined,
    /rollout-max-per-run: expected a whole number >= 0 or a percentage .*, got "2.5"/,
  ],
  [
    "negative heartbeat limit",
    [...BASE_ARGS, "--heartbeat-stale-sec=-1"],
    undefined,
    /heartbeat-stale-sec: expected a whole number 0-86400, got "-1"/,
  ],
  [
    "boot grace of zero",
    [...BASE_ARGS, "--boot-grace-min", "0"],
    undefined,
    /boot-grace-min: expected a whole number 1-1440, got "0"/,
  ],
];

Deno.test("reaper's rollout inputs are refused with a message when invalid, and no request is sent", (t) =>
  checkRefused(t, INVALID, { "rollout.json": JSON.stringify({ "rollout-max-per-run": 2.5 }) }));

Deno.test("reaper judges heartbeats against the run's start, so slow reads never make fresh ones stale", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await pool(gh, ["--heartbeat-stale-sec", "120"]);
  const ids = await provision(ctx, 2);
  await seed(ctx, ids, { heartbeatMin: 0 });
  // Listing the pool takes ten minutes (moto over thousands of instances, or a throttled EC2).
  const start = ctx.now().getTime();
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "DescribeInstancesCommand") {
        ctx.setNow(new Date(start + 10 * MIN));
      }
      return next(args);
    },
    { step: "initialize", name: "slowListing" },
  );

  const outcome = await reapInstances(ctx);

  assert.deepEqual(outcome.changes, []);
  assert.equal(found(outcome).pool.classes.large.unhealthy, 0);
  assert.deepEqual(await alive(ctx, ids), sorted(ids));
});
