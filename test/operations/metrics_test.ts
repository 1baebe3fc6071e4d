import assert from "node:assert/strict";
import { runMetrics } from "../../lib/operations/metrics.ts";
import { launchToRunner } from "../../lib/reaper/drain.ts";
import type { RunReport } from "../../lib/report.ts";

Deno.test("launchToRunner is launch to a first UD_REG_OK, for job launches whose first signal is still current", () => {
  const instance = (id: string, launchTime: string, initial: string) =>
    [id, {
      id,
      launchTime,
      tags: { InitialRunId: initial },
    }] as const;
  const signal = (id: string, state: string, runId: string, updatedAt: string) =>
    [id, {
      id,
      state,
      runId,
      updatedAt,
    }] as const;
  const waits = launchToRunner({
    instances: new Map([
      instance("i-1", "2026-12-06T12:00:00Z", "101"),
      instance("i-2", "2026-12-06T12:00:00Z", "102"),
      instance("i-3", "2026-12-06T12:00:00Z", "103"), // registered for a later run since
      instance("i-4", "2026-12-06T12:00:00Z", "warm-large-20261206T120000Z"),
    ]),
    signals: new Map([
      signal("i-1", "UD_REG_OK", "101", "2026-12-06T12:00:40Z"),
      signal("i-2", "UD_REG_OK", "102", "2026-12-06T12:01:20Z"),
      signal("i-3", "UD_REG_OK", "999", "2026-12-06T12:30:00Z"),
      signal("i-4", "UD_OK", "warm-large-20261206T120000Z", "2026-12-06T12:00:30Z"),
    ]),
  });
  assert.deepEqual(waits, { count: 2, sum: 120, min: 40, max: 80 });
  assert.equal(launchToRunner({ instances: new Map(), signals: new Map() }), undefined);
});

Deno.test("runMetrics says what the run found: per class, per run, and the jobs' wait as a statistic set", () => {
  const report: RunReport = {
    version: 1,
    dryRun: false,
    region: "us-east-1",
    table: "acme-widgets-ci-table",
    results: [{
      task: "reaper",
      status: "changed",
      summary: "",
      changes: [],
      warnings: [],
      durationMs: 1,
      found: {
        terminated: 3,
        orphans: 1,
        launchToRunner: { count: 2, sum: 120, min: 40, max: 80 },
        pool: {
          template: null,
          classes: { large: { idle: 2, claimed: 1, running: 4, created: 3 } },
        },
      },
    }],
    calls: {},
    writeCalls: 0,
    exitCode: 1,
  };
  const data = runMetrics(report, 12.34, new Date("2026-12-06T12:00:00Z"), 4999);
  const value = (name: string) => data.find((d) => d.MetricName === name);
  assert.equal(value("RunSucceeded")?.Value, 0, "exit 1: not a success");
  assert.equal(value("RunSeconds")?.Value, 12.3);
  assert.equal(value("ReapedInstances")?.Value, 3);
  assert.equal(value("OrphansTerminated")?.Value, 1);
  assert.equal(value("IdleInstances")?.Value, 2);
  assert.equal(value("BusyInstances")?.Value, 5);
  assert.equal(value("BootingInstances")?.Value, 3);
  assert.deepEqual(value("IdleInstances")?.Dimensions, [
    { Name: "Pool", Value: "acme-widgets-ci-table" },
    { Name: "ResourceClass", Value: "large" },
  ]);
  assert.deepEqual(value("LaunchToRunnerSeconds")?.StatisticValues, {
    SampleCount: 2,
    Sum: 120,
    Minimum: 40,
    Maximum: 80,
  });
  assert.equal(value("GithubRateLimitRemaining")?.Value, 4999);
});
