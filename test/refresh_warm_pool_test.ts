/**
 * The warm pool end to end (issue 18): refresh builds the pool with `--warm-pool large=1` and
 * launches a warm instance; the template's user data runs for real under the harness with that
 * instance's tags (InitialRunId `warm-…`); refresh advertises it only once it reported UD_OK with
 * a fresh heartbeat; provision (the control plane) picks the message up and claims it without any
 * launch, and it registers for the claiming run; the next refresh run launches a replacement.
 */
import assert from "node:assert/strict";
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
