import assert from "node:assert/strict";
import {
  exitCodeOf,
  MAX_CHANGE_LINES,
  renderJson,
  renderText,
  type RunReport,
} from "../lib/report.ts";
import type { TaskResult } from "../lib/task.ts";

function result(overrides: Partial<TaskResult>): TaskResult {
  return {
    task: "parameters",
    status: "unchanged",
    summary: "all parameters match",
    found: {},
    changes: [],
    warnings: [],
    durationMs: 1,
    ...overrides,
  };
}

function report(results: TaskResult[], dryRun = false): RunReport {
  return {
    version: 1,
    dryRun,
    region: "us-east-1",
    table: "t",
    results,
    calls: { "DynamoDB.GetItem": 3, "DynamoDB.PutItem": 1 },
    writeCalls: 1,
    exitCode: exitCodeOf(results),
  };
}

Deno.test("report text gives one block per task with changes, warnings and errors", () => {
  const text = renderText(report([
    result({
      task: "parameters",
      status: "changed",
      summary: "1 of 3 parameters written",
      changes: [{ action: "write", target: "metadata idle_time_sec", detail: "300 (was missing)" }],
    }),
    result({
      task: "table",
      status: "unchanged",
      summary: "t is ACTIVE",
      warnings: ["ttl elsewhere"],
    }),
    result({ task: "reaper", status: "failed", summary: "failed", error: "AccessDenied: no" }),
  ]));
  assert.equal(
    text,
    [
      "parameters       changed  1 of 3 parameters written",
      "  write metadata idle_time_sec: 300 (was missing)",
      "table            ok       t is ACTIVE",
      "  warning: ttl elsewhere",
      "reaper           FAILED   failed",
      "  error: AccessDenied: no",
      "result: 1 failed, 1 changed, 1 unchanged; 4 API calls, 1 writes",
    ].join("\n"),
  );
});

Deno.test("report text says 'would' for every change under dry-run", () => {
  const text = renderText(report([
    result({ status: "planned", changes: [{ action: "create", target: "queue q" }] }),
  ], true));
  assert.match(text, /^dry run: nothing was written$/m);
  assert.match(text, /^ {2}would create queue q$/m);
});

Deno.test("report text lists at most MAX_CHANGE_LINES changes per task when there are thousands", () => {
  const changes = Array.from(
    { length: 2000 },
    (_, i) => ({ action: "terminate", target: `i-${i}` }),
  );
  const text = renderText(report([result({ task: "reaper", status: "changed", changes })]));
  assert.equal(
    text.split("\n").filter((l) => l.startsWith("  terminate")).length,
    MAX_CHANGE_LINES,
  );
  assert.match(
    text,
    new RegExp(`… and ${2000 - MAX_CHANGE_LINES} more changes \\(all of them in --json\\)`),
  );
  assert.equal(
    JSON.parse(renderJson(report([result({ changes })]))).results[0].changes.length,
    2000,
  );
});

Deno.test("exit code is 1 when any task failed and 0 otherwise", () => {
  assert.equal(exitCodeOf([result({}), result({ status: "failed" })]), 1);
  assert.equal(exitCodeOf([result({}), result({ status: "changed" })]), 0);
});

Deno.test("report text shows the reaper's pool view as aligned columns under its block", () => {
  const large = {
    idle: 12,
    claimed: 3,
    running: 40,
    created: 1,
    current: 50,
    outdated: 6,
    unknownVersion: 0,
    unhealthy: 2,
    booting: 1,
    deferred: 3,
    oldestLaunch: "2026-01-15T09:00:00Z",
    oldestAgeMin: 180,
  };
  const text = renderText(report([
    result({
      task: "reaper",
      summary: "3 drained",
      found: { pool: { template: null, classes: { large, xlarge: { ...large, idle: 0 } } } },
    }),
  ]));
  const lines = text.split("\n");
  const at = lines.indexOf("  pool, against the no launch template found: versions not judged:");
  assert.ok(at > 0, text);
  assert.deepEqual(lines.slice(at + 1, at + 4), [
    "    class   idle  claimed  running  created  current    outdated  unknown  unhealthy  booting  oldest",
    "    large     12        3       40        1       50  6 (3 left)        0          2        1     3 h",
    "    xlarge     0        3       40        1       50  6 (3 left)        0          2        1     3 h",
  ]);
});

Deno.test("report text shows no pool block when the pool has no instance", () => {
  const text = renderText(report([
    result({ task: "reaper", found: { pool: { template: null, classes: {} } } }),
  ]));
  assert.ok(!text.includes("pool, against"), text);
});

Deno.test("report text names each unreachable endpoint before the result line", () => {
  const r = report([
    result({ task: "table", status: "failed", summary: "failed", error: "timed out" }),
    result({ task: "parameters", status: "skipped", summary: "skipped" }),
  ]);
  r.unreachable = [{
    endpoint: "https://dynamodb.us-east-1.amazonaws.com",
    call: "DynamoDB.DescribeTable",
    timeoutMs: 20_000,
    attempts: 5,
  }];
  const lines = renderText(r).split("\n");
  assert.equal(
    lines.at(-2),
    "unreachable: https://dynamodb.us-east-1.amazonaws.com did not answer DynamoDB.DescribeTable " +
      "within 20 s on any of 5 attempts; later requests to it were not sent",
  );
  assert.match(lines.at(-1)!, /^result: 1 failed, 1 skipped;/);
  assert.equal(JSON.parse(renderJson(r)).unreachable[0].call, "DynamoDB.DescribeTable");
});

Deno.test("report text shows the warm pool per class: usage, minimum, ready, booting, launched this run, interruptions, fallbacks and a class below its minimum", () => {
  const large = {
    resourceClass: "large",
    usageClass: "on-demand",
    minimum: 3,
    ready: 1,
    booting: 1,
    launched: 1,
    outdated: 0,
    unhealthy: 0,
    extra: 0,
    instanceHoursPerDay: 23.6,
    interrupted: 0,
    fellBack: null,
    capacityShort: false,
    belowMinimum: false,
  };
  const text = renderText(report([
    result({
      task: "warm-pool",
      summary: "1 kept warm, 1 launched",
      found: {
        warm: {
          schedule: "Mon-Fri 08:00-19:00 Europe/Berlin",
          inSchedule: true,
          classes: {
            large,
            xlarge: { ...large, resourceClass: "xlarge", minimum: 0, ready: 2, launched: 0 },
            "large:spot": {
              ...large,
              usageClass: "spot",
              minimum: 2,
              ready: 0,
              booting: 0,
              interrupted: 1,
              fellBack: { count: 1, why: "InsufficientInstanceCapacity: no capacity" },
              capacityShort: true,
              belowMinimum: true,
            },
          },
        },
      },
    }),
  ]));
  const lines = text.split("\n");
  const at = lines.indexOf("  warm pool, schedule Mon-Fri 08:00-19:00 Europe/Berlin: inside:");
  assert.ok(at > 0, text);
  assert.deepEqual(lines.slice(at + 1, at + 5), [
    "    class                                                    usage  minimum  ready  booting  launched  outdated  interrupted  h/day",
    "    large                                                on-demand        3      1        1         1         0            0   23.6",
    "    xlarge                                               on-demand        0      2        1         0         0            0   23.6",
    "    large:spot (below minimum)  spot (1 on-demand: capacity short)        2      0        0         1         0            1   23.6",
  ]);
});
