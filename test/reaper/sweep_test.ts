/**
 * The reaper's sweeps and targeted runs (lib/reaper/sweep.ts): when the whole pool is listed,
 * what a run between sweeps asks EC2 (by id only, what it acts on), and that an orphan launched
 * between sweeps is still terminated within its grace plus one sweep interval.
 */
import assert from "node:assert/strict";
import { reapInstances } from "../../lib/reaper.ts";
import { SWEEP_KEY, sweepDue, sweepIntervalMin, targetIds } from "../../lib/reaper/sweep.ts";
import { GetCommand, PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item } from "../../lib/contract.ts";
import { startFakeGithub } from "../support/github.ts";
import { TEST_PAT, type TestContext } from "../support/aws.ts";
import {
  counts,
  ec2States,
  filterValues,
  launch,
  MIN,
  seed,
  setup,
  sorted,
  stored,
  TABLE,
  watchEc2,
} from "./harness.ts";

const NOW = new Date("2026-01-15T12:00:00Z");
const MEMORY = {
  at: "2026-01-15T11:55:00Z",
  alive: 100,
  templateVersion: 3,
  outdatedIdle: 0,
};

Deno.test("sweepDue says why a sweep is due, and nothing between sweeps", () => {
  const due = (change: Partial<Parameters<typeof sweepDue>[0]>) =>
    sweepDue({
      mode: "auto",
      memory: MEMORY,
      now: NOW,
      intervalMin: 7,
      templateVersion: 3,
      liveRecords: 120,
      ...change,
    });
  assert.equal(due({}), undefined);
  assert.equal(due({ mode: "always" }), "--sweep always");
  assert.equal(due({ memory: undefined }), "no sweep remembered");
  assert.match(due({ now: new Date("2026-01-15T12:02:00Z") })!, /older than the sweep interval/);
  assert.match(due({ templateVersion: 4 })!, /default version is 4, the last sweep saw 3/);
  assert.match(due({ liveRecords: 301 })!, /301 live records, while the last sweep saw 100/);
  assert.equal(sweepIntervalMin(15), 7);
  assert.equal(sweepIntervalMin(5), 5, "at least 5 minutes");
  assert.equal(sweepIntervalMin(60), 30);
});

Deno.test("targetIds picks expired, terminated, silent and failed records, and idle ones during a rollout", () => {
  const beat = (id: string, at: string) => ({ entity: "HEARTBEAT", id, updatedAt: at });
  const fresh = "2026-01-15T11:59:50Z";
  const later = "2026-01-15T12:30:00Z";
  const input = {
    records: [
      { id: "expired", state: "idle", threshold: "2026-01-15T11:00:00Z" },
      { id: "terminated", state: "terminated", threshold: later },
      { id: "silent", state: "running", threshold: later },
      { id: "failed", state: "idle", threshold: later },
      { id: "busy", state: "running", threshold: later },
      { id: "idle", state: "idle", threshold: later },
    ],
    artifacts: [
      beat("expired", fresh),
      beat("terminated", fresh),
      beat("silent", "2026-01-15T11:58:00Z"),
      beat("failed", fresh),
      { entity: "WS", id: "failed", updatedAt: fresh, value: { state: "UD_REG_FAILED" } },
      beat("busy", fresh),
      beat("idle", fresh),
    ],
    now: NOW.getTime(),
    rolloutInProgress: false,
  };
  assert.deepEqual(targetIds(input), ["expired", "terminated", "silent", "failed"]);
  assert.deepEqual(targetIds({ ...input, rolloutInProgress: true }), [
    "expired",
    "terminated",
    "silent",
    "failed",
    "idle",
  ]);
});

/** The DescribeInstances requests of the next calls: their filters' names and value counts. */
function watchDescribes(ctx: TestContext): { name: string; values: number }[][] {
  const seen: { name: string; values: number }[][] = [];
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "DescribeInstancesCommand") {
        const input = args.input as { Filters?: { Name?: string; Values?: string[] }[] };
        seen.push((input.Filters ?? []).map((f) => ({
          name: f.Name ?? "",
          values: f.Values?.length ?? 0,
        })));
      }
      return next(args);
    },
    { step: "initialize", name: "watchDescribes" },
  );
  return seen;
}

Deno.test("reaper between sweeps describes by id only the instances it acts on, and a converged run lists nothing", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--sweep", "auto", "--orphan-grace-min", "20"]);
  const ids = await launch(ctx, 260);
  for (const id of ids) await seed(ctx, id, "idle", 10);
  const describes = watchDescribes(ctx);

  // The first run sweeps (none remembered) and remembers it.
  const first = await reapInstances(ctx);
  assert.equal(counts(first.found).swept, 1);
  assert.equal(counts(first.found).alive, 260);
  const { Item } = await ctx.clients.ddb.send(new GetCommand({ TableName: TABLE, Key: SWEEP_KEY }));
  assert.equal(Item!.value.alive, 260);
  assert.ok(describes.some((d) => d.some((f) => f.name === `tag:refresh:pool`)), "a listing");

  // Converged, sweep not due: no DescribeInstances at all, nothing written.
  ctx.setNow(new Date(ctx.now().getTime() + 2 * MIN));
  for (const id of ids) await seed(ctx, id, "idle", 10);
  describes.length = 0;
  ctx.counter.reset();
  const converged = await reapInstances(ctx);
  assert.equal(counts(converged.found).swept, 0);
  assert.equal(describes.length, 0, JSON.stringify(describes));
  assert.equal(ctx.counter.writes(), 0);
  assert.match(converged.summary, /^nothing to reap \(260 records; 0 instances described by id/);

  // 210 records expire: their proofs looked up by id (no description in full, no state asked of
  // proven instances), within EC2's limits per call, and reaped.
  for (const id of ids.slice(0, 210)) await seed(ctx, id, "idle", -1);
  const rest = ids.slice(210);
  describes.length = 0;
  const calls = watchEc2(ctx);
  const reaped = await reapInstances(ctx);
  assert.equal(counts(reaped.found).swept, 0);
  assert.equal(counts(reaped.found).terminated, 210);
  assert.equal(counts(reaped.found).described, 210);
  assert.equal(describes.length, 0, JSON.stringify(describes));
  const asked = (name: string) => calls.filter((c) => c.name === name);
  assert.equal(asked("DescribeInstanceStatus").length, 0);
  assert.equal(asked("DescribeTags").length, 2);
  for (const c of asked("DescribeTags")) assert.ok(filterValues(c.input) <= 200);
  const looked = asked("DescribeTags").flatMap((c) =>
    (c.input.Filters as { Name: string; Values: string[] }[])
      .find((f) => f.Name === "resource-id")!.Values
  );
  assert.deepEqual(sorted(looked), sorted(ids.slice(0, 210)));
  const states = await ec2States(ctx.clients.ec2, rest);
  assert.ok(Object.values(states).every((s) => s === "running"));
});

Deno.test("reaper terminates an orphan launched between sweeps within its grace plus one sweep interval", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const grace = 20;
  const ctx = await setup(gh, ["--sweep", "auto", "--orphan-grace-min", String(grace)]);
  const [pooled] = await launch(ctx, 1);
  await seed(ctx, pooled, "running", 600, "run-1");
  // moto stamps launch times with the real clock; the reaper's clock starts from it.
  const start = Date.now();
  ctx.setNow(new Date(start));
  const first = await reapInstances(ctx);
  assert.equal(counts(first.found).swept, 1);
  const [orphan] = await launch(ctx, 1);

  // Every 5 minutes a run, as a cron schedule makes them, until the orphan is gone.
  let minutes = 0;
  let sweeps = 0;
  while ((await ec2States(ctx.clients.ec2, [orphan]))[orphan] !== "terminated") {
    minutes += 5;
    assert.ok(minutes <= grace + sweepIntervalMin(grace) + 5, `alive after ${minutes} min`);
    ctx.setNow(new Date(start + minutes * MIN));
    await seed(ctx, pooled, "running", 600, "run-1");
    const run = await reapInstances(ctx);
    sweeps += counts(run.found).swept;
  }
  assert.ok(minutes > grace, `terminated after ${minutes} min, inside its grace`);
  assert.ok(sweeps >= 1 && sweeps < minutes / 5, `${sweeps} sweeps in ${minutes / 5} runs`);
  assert.equal((await ec2States(ctx.clients.ec2, [pooled]))[pooled], "running");
});

Deno.test("reaper between sweeps reads only failed worker signals, and the next sweep deletes the other strays", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--sweep", "auto", "--orphan-grace-min", "20"]);
  const [pooled] = await launch(ctx, 1);
  await seed(ctx, pooled, "idle", 600);
  assert.equal(counts((await reapInstances(ctx)).found).swept, 1);

  // Two worker signals without a record, both older than the grace: one failed, one not.
  const old = new Date(ctx.now().getTime() - 60 * MIN);
  const signal = (id: string, state: string) =>
    ctx.clients.ddb.send(
      new PutCommand({ TableName: TABLE, Item: item("WS", id, old, { value: { state } }) }),
    );
  await signal("i-0aaaaaaaaaaaaaaaa", "UD_REG_FAILED");
  await signal("i-0bbbbbbbbbbbbbbbb", "UD_REG_OK");
  const queries: Record<string, unknown>[] = [];
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "QueryCommand") queries.push(args.input as never);
      return next(args);
    },
    { step: "initialize", name: "watchQueries" },
  );

  ctx.setNow(new Date(ctx.now().getTime() + 2 * MIN));
  await seed(ctx, pooled, "idle", 600);
  const targeted = await reapInstances(ctx);
  assert.equal(counts(targeted.found).swept, 0);
  const signals = queries.filter((q) => JSON.stringify(q).includes("TYPE#WS"));
  assert.equal(signals.length, 1);
  assert.match(String(signals[0].FilterExpression), /contains\(/);
  assert.deepEqual(await stored(ctx, "WS"), [pooled, "i-0bbbbbbbbbbbbbbbb"].sort());

  // The sweep reads every signal and deletes the stray one.
  ctx.setNow(new Date(ctx.now().getTime() + 20 * MIN));
  await seed(ctx, pooled, "idle", 600);
  const swept = await reapInstances(ctx);
  assert.equal(counts(swept.found).swept, 1);
  assert.deepEqual(await stored(ctx, "WS"), [pooled]);
});
