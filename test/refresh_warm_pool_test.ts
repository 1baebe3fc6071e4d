/**
 * The warm pool end to end (issue 18): refresh builds the pool with `--warm-pool large=1` and
 * launches a warm instance; the template's user data runs for real under the harness with that
 * instance's tags (InitialRunId `warm-…`); refresh advertises it only once it reported UD_OK with
 * a fresh heartbeat; provision (the control plane) picks the message up and claims it without any
 * launch, and it registers for the claiming run; the next refresh run launches a replacement.
 */
import assert from "node:assert/strict";
import { TerminateInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { poolRunnerLabel } from "../lib/contract.ts";
import type { WarmView } from "../lib/warm_pool.ts";
import { readGithubSide } from "./support/runner_package.ts";
import { startWarmHarness, TABLE } from "./support/warm_harness.ts";

const RUN_ID = "5151";

function warmOf(report: { results: { task: string; found: Record<string, unknown> }[] }) {
  return report.results.find((r) => r.task === "warm-pool")!.found.warm as WarmView;
}

Deno.test("a warm instance launched by refresh boots, is advertised once ready, and a claim takes it without a launch", async () => {
  await using pool = await startWarmHarness(["--warm-pool", "large=1"]);

  // 1. refresh builds the pool and launches the warm instance, advertising nothing yet.
  const built = await pool.refresh();
  assert.equal(built.code, 0, JSON.stringify(built.report.results, null, 1));
  assert.equal(built.report.calls["EC2.CreateFleet"], 1);
  assert.equal(warmOf(built.report).classes.large.launched, 1);
  const [warm] = await pool.instancesTagged(/^warm-large-/);
  assert.ok(warm, "a warm instance was launched");
  assert.equal((await pool.plane.record(warm))?.state, "idle");
  assert.equal(await pool.pickUp("large"), undefined, "advertised before it booted");

  // 2. Booting: a run launches nothing more and advertises nothing.
  const instance = await pool.boot(warm);
  const booting = await pool.refresh(["--only", "warm-pool"]);
  assert.equal(booting.code, 0, JSON.stringify(booting.report.results, null, 1));
  assert.equal(booting.report.writeCalls, 0, JSON.stringify(booting.report.calls));

  // 3. Ready (UD_OK with the warm run id, heartbeat fresh): the next run advertises it.
  await pool.waitReady(warm);
  const signal = await pool.plane.signal(warm);
  assert.match(signal!.runId, /^warm-large-/);
  const ready = await pool.refresh(["--only", "warm-pool"]);
  assert.equal(ready.code, 0, JSON.stringify(ready.report.results, null, 1));
  assert.deepEqual(ready.report.calls["EC2.CreateFleet"], undefined);
  assert.equal(warmOf(ready.report).classes.large.ready, 1);
  const message = await pool.pickUp("large");
  const record = await pool.plane.record(warm);
  assert.deepEqual(message, {
    id: warm,
    resourceClass: "large",
    instanceType: "m5.large",
    cpu: 2,
    mmem: 4096,
    usageClass: "on-demand",
    threshold: record!.threshold,
  });

  // 4. provision claims what it picked up: UD_REG_OK for its run id, no instance launched.
  // provision waits about 10 s; a loaded test machine may take longer (bench/ measures it).
  const claimed = await pool.plane.claim(warm, RUN_ID, { timeoutMs: 60_000 });
  assert.ok(claimed.ok, `claim: ${!claimed.ok && claimed.reason}\n${await instance.log()}`);
  const github = await readGithubSide(pool.githubDir);
  // The run id, and the label naming the pool (contract.ts), which the reaper relies on.
  assert.deepEqual(Object.values(github.runners).map((r) => r.labels), [
    `${RUN_ID},${poolRunnerLabel("us-east-1", TABLE)}`,
  ]);
  console.log(`warm claim -> UD_REG_OK: ${(claimed.elapsedMs / 1000).toFixed(1)} s`);

  // 5. The next run launches a replacement for the claimed one.
  const next = await pool.refresh(["--only", "warm-pool"]);
  assert.equal(next.code, 0, JSON.stringify(next.report.results, null, 1));
  assert.equal(next.report.calls["EC2.CreateFleet"], 1);
  assert.equal(warmOf(next.report).classes.large.launched, 1);
  assert.equal((await pool.instancesTagged(/^warm-large-/)).length, 2);
  assert.equal((await pool.plane.record(warm))?.state, "running");
});

Deno.test("a spot warm instance EC2 is about to reclaim is never claimed: provision takes the healthy one at once; after EC2 reclaims it, refresh leaves only its terminated record and refills the pool", async () => {
  await using pool = await startWarmHarness(["--warm-pool", "large:spot=2"]);
  const built = await pool.refresh();
  assert.equal(built.code, 0, JSON.stringify(built.report.results, null, 1));
  const ids = await pool.instancesTagged(/^warm-large-/);
  assert.equal(ids.length, 2);
  for (const id of ids) await pool.boot(id);
  for (const id of ids) await pool.waitReady(id);
  const advertised = await pool.refresh(["--only", "warm-pool"]);
  assert.equal(advertised.code, 0, JSON.stringify(advertised.report.results, null, 1));
  assert.equal(warmOf(advertised.report).classes["large:spot"].ready, 2);

  // EC2 announces the interruption of one; it withdraws (its record expires at once).
  const [doomed, healthy] = ids;
  pool.imds(doomed).announce("spot-interruption");
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  assert.match(String((await pool.plane.record(doomed))?.interruption), /^spot-interruption/);

  // provision (asking for spot) twice in turn: the doomed one's claim fails at once, the
  // healthy one is claimed; the second finds the queue empty (and would launch).
  const first = await pool.provisionClaim("large", "7001", {
    usageClass: "spot",
    timeoutMs: 60_000,
  });
  assert.equal(first.claimed, healthy, JSON.stringify(first));
  for (const attempt of first.attempts.filter((a) => a.id === doomed)) {
    assert.deepEqual([attempt.ok, attempt.ms < 1_000], [false, true], JSON.stringify(attempt));
  }
  const second = await pool.provisionClaim("large", "7002", { usageClass: "spot" });
  assert.equal(second.claimed, undefined, JSON.stringify(second));
  assert.equal((await pool.plane.record(doomed))?.state, "idle", "never claimed");

  // EC2 reclaims it. Two refresh runs: nothing of it left but a terminated record; the warm
  // pool is back to two (launched in its place and the claimed one's).
  await pool.ec2.send(new TerminateInstancesCommand({ InstanceIds: [doomed] }));
  const reaped = await pool.refresh();
  assert.equal(reaped.code, 0, JSON.stringify(reaped.report.results, null, 1));
  const refilled = await pool.refresh();
  assert.equal(refilled.code, 0, JSON.stringify(refilled.report.results, null, 1));
  // No live record: the reaper locks it (terminated) and, its instance gone, expunges it.
  const record = await pool.plane.record(doomed);
  assert.ok(record === undefined || record.state === "terminated", JSON.stringify(record));
  assert.equal(await pool.plane.heartbeat(doomed), undefined);
  assert.equal(await pool.plane.signal(doomed), undefined);
  const view = warmOf(refilled.report).classes["large:spot"];
  assert.equal(view.ready + view.booting + view.launched, 2, JSON.stringify(view));
});
