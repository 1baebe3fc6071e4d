/**
 * The reaper's classification (lib/reaper/classify.ts): orphans and their grace, records of
 * vanished instances, instances outside the pool, thresholds that are not timestamps, strays.
 */
import assert from "node:assert/strict";
import { TerminateInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { UpdateCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { reapInstances } from "../../lib/reaper.ts";
import { classify, unrecordedYoung } from "../../lib/reaper/classify.ts";
import { readTargets } from "../../lib/reaper/reads.ts";
import type { ArtifactKey, Pool } from "../../lib/reaper/reads.ts";
import { startFakeGithub } from "../support/github.ts";
import { TEST_PAT } from "../support/aws.ts";
import {
  counts,
  ec2LaunchTimes,
  ec2States,
  launch,
  launchForeignPool,
  MIN,
  seed,
  setup,
  sorted,
  stored,
  TABLE,
  watchTerminations,
} from "./harness.ts";

Deno.test("reaper terminates tagged orphans past the grace period and spares young or foreign ones", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--orphan-grace-min", "20"]);
  const [orphan, young] = await launch(ctx, 2);
  const [foreign] = await launch(ctx, 1, false);
  const [pooled] = await launch(ctx, 1);
  await seed(ctx, pooled, "idle", 5);
  // `young` launched 15 minutes ago by the clock: under the 20-minute grace period.
  const launchTimes = await ec2LaunchTimes(ctx.clients.ec2, [orphan, young]);
  ctx.setNow(new Date(launchTimes[young] + 15 * MIN));
  const first = await reapInstances(ctx);
  assert.equal(counts(first.found).orphans, 0);
  assert.deepEqual(first.changes, []);

  ctx.setNow(new Date(launchTimes[orphan] + 21 * MIN));
  await seed(ctx, pooled, "idle", 5);
  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.orphans, 2);
  assert.deepEqual(
    await ec2States(ctx.clients.ec2, [orphan, young, foreign, pooled]),
    { [orphan]: "terminated", [young]: "terminated", [foreign]: "running", [pooled]: "running" },
  );
  assert.match(outcome.changes[0].detail!, /^orphan: no record, launched /);
  assert.deepEqual(await stored(ctx, "INSTANCE"), [pooled]);
});

Deno.test("reaper marks records of vanished instances terminated and deletes them", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [vanished, alive] = await launch(ctx, 2);
  const [untagged] = await launch(ctx, 1, false);
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [vanished] }));
  const never = "i-0123456789abcdef0";
  const fresh = "i-0fedcba9876543210";
  await seed(ctx, vanished, "idle", 5);
  await seed(ctx, never, "running", 20, "run-1");
  await seed(ctx, fresh, "created", 5, "", -2); // written 2 minutes ago: EC2 may not list it yet
  await seed(ctx, alive, "idle", 5);
  await seed(ctx, untagged, "claimed", 5, "run-2");
  ctx.counter.reset();

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.lost, 2);
  assert.equal(found.terminated, 0);
  assert.equal(ctx.counter.counts.get("EC2.TerminateInstances"), undefined);
  assert.deepEqual(await stored(ctx, "INSTANCE"), sorted([fresh, alive, untagged]));
  assert.deepEqual(await stored(ctx, "HEARTBEAT"), sorted([fresh, alive, untagged]));
  assert.deepEqual(
    sorted(outcome.changes.map((c) => c.target)),
    sorted([`instance ${vanished}`, `instance ${never}`]),
  );
  assert.ok(outcome.changes.every((c) => c.action === "expunge"));
  assert.equal((await ec2States(ctx.clients.ec2, [untagged]))[untagged], "running");
});

Deno.test("reaper never terminates an instance outside the pool that a terminated or expired record names, and reports it", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  // Any runner job can write these records: EC2 says none of the instances is the pool's.
  const [untaggedA, untaggedB] = await launch(ctx, 2, false);
  const otherPool = await launchForeignPool(ctx);
  await seed(ctx, untaggedA, "terminated", -10);
  await seed(ctx, untaggedB, "idle", -10);
  await seed(ctx, otherPool, "running", -10, "run-1");
  const terminations = watchTerminations(ctx);
  ctx.counter.reset();

  const outcome = await reapInstances(ctx);

  assert.deepEqual(terminations, []);
  assert.equal(ctx.counter.writes(), 0);
  const found = counts(outcome.found);
  assert.equal(found.foreign, 3);
  assert.equal(found.terminated, 0);
  assert.deepEqual(outcome.changes, []);
  assert.deepEqual(await ec2States(ctx.clients.ec2, [untaggedA, untaggedB, otherPool]), {
    [untaggedA]: "running",
    [untaggedB]: "running",
    [otherPool]: "running",
  });
  for (const id of [untaggedA, untaggedB, otherPool]) {
    assert.ok(
      outcome.warnings?.some((w) =>
        w.startsWith(`record ${id} `) && /not proven the pool's.*not terminated/.test(w)
      ),
      `${id}: ${outcome.warnings}`,
    );
  }
  assert.deepEqual(await stored(ctx, "INSTANCE"), sorted([untaggedA, untaggedB, otherPool]));
});

Deno.test("reaper never expires a record whose threshold is not a strict UTC timestamp, and warns about it", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const odd = [
    "1700000000", // epoch seconds: compared as text it sorts before any date
    "",
    "soon",
    "2025-01-01", // a date alone
    "2025-01-01T00:00:00+00:00", // an offset, not Z
    "2025-13-01T00:00:00Z", // no 13th month
    "2025-02-30T00:00:00Z",
  ];
  const ids = await launch(ctx, odd.length + 1);
  for (const [i, threshold] of odd.entries()) {
    await seed(ctx, ids[i], "idle", 5);
    await ctx.clients.ddb.send(
      new UpdateCommand({
        TableName: TABLE,
        Key: { PK: "TYPE#INSTANCE", SK: `ID#${ids[i]}` },
        UpdateExpression: "SET threshold = :t",
        ExpressionAttributeValues: { ":t": threshold },
      }),
    );
  }
  // Fractional seconds are tolerated: this one expired a minute ago.
  const fractional = ids[odd.length];
  await seed(ctx, fractional, "idle", 5);
  await ctx.clients.ddb.send(
    new UpdateCommand({
      TableName: TABLE,
      Key: { PK: "TYPE#INSTANCE", SK: `ID#${fractional}` },
      UpdateExpression: "SET threshold = :t",
      ExpressionAttributeValues: { ":t": new Date(ctx.now().getTime() - MIN).toISOString() },
    }),
  );
  const terminations = watchTerminations(ctx);

  const outcome = await reapInstances(ctx);

  assert.deepEqual(terminations, [[fractional]]);
  const found = counts(outcome.found);
  assert.equal(found.invalid, odd.length);
  for (const [i, threshold] of odd.entries()) {
    assert.ok(
      outcome.warnings?.includes(
        `record ${ids[i]} has threshold ${
          JSON.stringify(threshold)
        }, not a UTC timestamp like 2025-04-24T18:31:04Z; it never expires by threshold`,
      ),
      `${threshold}: ${outcome.warnings}`,
    );
  }
  const states = await ec2States(ctx.clients.ec2, ids);
  for (const id of ids.slice(0, odd.length)) assert.equal(states[id], "running", id);
});

/** A pool with `alive` instances, for the pure functions. */
function poolOf(alive: string[] = []): Pool {
  return {
    templateIds: new Set(),
    templatesByName: new Map(),
    alive: new Map(alive.map((id) => [id, { id, proof: "tag" as const }])),
    foreign: new Map(),
    ended: new Set(),
  };
}

Deno.test("classify makes young items without a record strays only when EC2 reports their instance terminated", () => {
  const now = Date.parse("2026-01-15T12:00:00Z");
  const heartbeat = (id: string, updatedAt: string): ArtifactKey => ({
    entity: "HEARTBEAT",
    id,
    updatedAt,
  });
  const artifacts = [
    heartbeat("i-0aaaaaaaaaaaaaaaa", "2026-01-15T11:59:59Z"), // young, terminated
    heartbeat("i-0bbbbbbbbbbbbbbbb", "2026-01-15T11:59:59Z"), // young, not reported terminated
    heartbeat("i-0cccccccccccccccc", "2026-01-15T11:00:00Z"), // old: a stray anyway
    heartbeat("i-0dddddddddddddddd", "2026-01-15T11:59:59Z"), // young, alive in the pool
  ];
  const input = {
    records: [],
    artifacts,
    pool: poolOf(["i-0dddddddddddddddd"]),
    now,
    graceMs: 15 * MIN,
  };
  // Only the young ones the pool does not hold alive need EC2's word.
  assert.deepEqual(unrecordedYoung(input), ["i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"]);
  const plan = classify({ ...input, ended: new Set(["i-0aaaaaaaaaaaaaaaa"]) });
  assert.deepEqual(plan.strays.map((k) => k.id), ["i-0aaaaaaaaaaaaaaaa", "i-0cccccccccccccccc"]);
  assert.deepEqual(classify(input).strays.map((k) => k.id), ["i-0cccccccccccccccc"]);
});

Deno.test("unrecordedYoung asks nothing about items that have a record", () => {
  const now = Date.parse("2026-01-15T12:00:00Z");
  const id = "i-0aaaaaaaaaaaaaaaa";
  assert.deepEqual(
    unrecordedYoung({
      records: [{ id, state: "idle" }],
      artifacts: [{ entity: "WS", id, updatedAt: "2026-01-15T11:59:59Z" }],
      pool: poolOf(),
      now,
      graceMs: 15 * MIN,
    }),
    [],
  );
});

Deno.test("reaper clears at once the records, heartbeats and signals of instances EC2 reclaimed, busy or idle, with no grace", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--orphan-grace-min", "20"]);
  const [busy, idle, alive] = await launch(ctx, 3);
  // Records written a minute ago (well inside the grace), unexpired: one running a job, one idle.
  await seed(ctx, busy, "running", 30, "4242", -1);
  await seed(ctx, idle, "idle", 10, "", -1);
  await seed(ctx, alive, "idle", 10, "", -1);
  // EC2 reclaims both spot instances.
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [busy, idle] }));
  ctx.counter.reset();
  const outcome = await reapInstances(ctx);
  // The listing by tag, then the unlisted records' instances by id, once: nothing asks again.
  assert.equal(ctx.counter.counts.get("EC2.DescribeInstances"), 2);
  assert.equal(counts(outcome.found).lost, 2, outcome.summary);
  assert.deepEqual(sorted(await stored(ctx, "INSTANCE")), [alive]);
  assert.deepEqual(sorted(await stored(ctx, "HEARTBEAT")), [alive]);
  assert.deepEqual(sorted(await stored(ctx, "WS")), [alive]);
  assert.ok(
    outcome.changes.some((c) => /EC2 reports the instance terminated/.test(c.detail ?? "")),
    JSON.stringify(outcome.changes),
  );
});

Deno.test("readTargets keeps EC2's word that a described instance ended, so nothing asks again", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [gone, alive] = await launch(ctx, 2);
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [gone] }));
  ctx.counter.reset();
  const pool = await readTargets(
    ctx.clients.ec2,
    TABLE,
    { templateIds: new Set(), templatesByName: new Map() },
    [gone, alive, "i-0dddddddddddddddd"],
  );
  assert.deepEqual([...pool.ended], [gone]);
  assert.deepEqual([...pool.alive.keys()], [alive]);
  assert.deepEqual(sorted([...pool.checked!]), sorted([gone, alive, "i-0dddddddddddddddd"]));
  assert.equal(ctx.counter.counts.get("EC2.DescribeInstances"), 1);
});
