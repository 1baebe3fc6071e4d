import assert from "node:assert/strict";
import type { DesiredState } from "../lib/config.ts";
import { exitCodeOf, renderText } from "../lib/report.ts";
import { describeDuration, runBudget, runTasks, type TaskContext } from "../lib/task.ts";

/** A context with no clients: these tasks only consult the budget. */
function context(clock: () => number, totalMs: number): TaskContext & { lines: string[] } {
  const lines: string[] = [];
  return {
    desired: { dryRun: false } as DesiredState,
    clients: {} as TaskContext["clients"],
    now: () => new Date("2026-01-15T12:00:00Z"),
    log: { info: (m) => lines.push(m), warn: (m) => lines.push(`warning: ${m}`) },
    dryRun: false,
    secret: () => {},
    budget: runBudget(totalMs, clock),
    lines,
  };
}

Deno.test("runTasks starts no task after the deadline and reports the skipped ones", async () => {
  let t = 0;
  const ctx = context(() => t, 60_000);
  const ran: string[] = [];
  const results = await runTasks([
    ["table", () => {
      ran.push("table");
      t += 30_000;
      return Promise.resolve({ summary: "ok", found: {}, changes: [] });
    }],
    ["parameters", () => {
      ran.push("parameters");
      t += 31_000; // the deadline passes while this task runs: it finishes
      return Promise.resolve({ summary: "ok", found: {}, changes: [] });
    }],
    ["github-token", () => {
      ran.push("github-token");
      return Promise.resolve({ summary: "ok", found: {}, changes: [] });
    }],
    ["reaper", () => {
      ran.push("reaper");
      return Promise.resolve({ summary: "ok", found: {}, changes: [] });
    }],
  ], ctx);
  assert.deepEqual(ran, ["table", "parameters"]);
  assert.deepEqual(results.map((r) => [r.task, r.status]), [
    ["table", "unchanged"],
    ["parameters", "unchanged"],
    ["github-token", "skipped"],
    ["reaper", "skipped"],
  ]);
  assert.equal(
    results[2].error,
    "not started: the run's 1 min deadline had passed (--deadline-min); the next run does it",
  );
  assert.equal(exitCodeOf(results), 1);
  assert.deepEqual(ctx.lines.filter((l) => l.startsWith("warning:")).length, 2);
  const text = renderText({
    version: 1,
    dryRun: false,
    region: "us-east-1",
    table: "t",
    results,
    calls: {},
    writeCalls: 0,
    exitCode: 1,
  });
  assert.match(text, /^github-token +SKIPPED +skipped, the run's deadline had passed$/m);
  assert.match(text, /^ {2}error: not started: the run's 1 min deadline had passed/m);
  assert.match(text, /^result: 2 skipped, 2 unchanged; 0 API calls, 0 writes$/m);
});

Deno.test("runBudget counts on its own clock, not on the tasks' frozen clock", () => {
  let t = 1_000;
  const budget = runBudget(5_000, () => t);
  assert.equal(budget.expired(), false);
  assert.equal(budget.remainingMs(), 5_000);
  t += 4_999;
  assert.equal(budget.expired(), false);
  assert.equal(budget.remainingMs(), 1);
  t += 1;
  assert.equal(budget.expired(), true);
  assert.equal(budget.remainingMs(), 0);
  t += 10_000;
  assert.equal(budget.remainingMs(), 0);
});

Deno.test("runBudget defaults to the monotonic performance clock", async () => {
  const budget = runBudget(30);
  assert.equal(budget.expired(), false);
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(budget.expired(), true);
});

Deno.test("describeDuration says minutes, seconds or milliseconds", () => {
  assert.equal(describeDuration(600_000), "10 min");
  assert.equal(describeDuration(1_500), "1.5 s");
  assert.equal(describeDuration(90_000), "90 s");
  assert.equal(describeDuration(250), "250 ms");
});
