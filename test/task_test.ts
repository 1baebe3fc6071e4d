import assert from "node:assert/strict";
import type { DesiredState } from "../lib/config.ts";
import { exitCodeOf, renderText } from "../lib/report.ts";
import {
  DEPENDS_ON,
  describeDuration,
  ENDPOINT_DOWN,
  runBudget,
  runTasks,
  type TaskContext,
  TASKS,
} from "../lib/task.ts";

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

const ok = (summary = "ok") => ({ summary, found: {}, changes: [] });

Deno.test("runTasks starts no task after the deadline and reports the skipped ones", async () => {
  let t = 0;
  const ctx = context(() => t, 60_000);
  const ran: string[] = [];
  const results = await runTasks([
    ["table", () => {
      ran.push("table");
      t += 30_000;
      return Promise.resolve(ok());
    }],
    ["launch-template", async () => {
      ran.push("launch-template");
      await Promise.resolve(); // github-token starts meanwhile
      t += 31_000; // the deadline passes while this task runs: it finishes
      return ok();
    }],
    ["github-token", () => {
      ran.push("github-token"); // started beside launch-template, before the deadline
      return Promise.resolve(ok());
    }],
    ["warm-pool", () => {
      ran.push("warm-pool"); // waits for launch-template, so would start after the deadline
      return Promise.resolve(ok());
    }],
  ], ctx);
  assert.deepEqual(ran, ["table", "launch-template", "github-token"]);
  assert.deepEqual(results.map((r) => [r.task, r.status]), [
    ["table", "unchanged"],
    ["launch-template", "unchanged"],
    ["github-token", "unchanged"],
    ["warm-pool", "skipped"],
  ]);
  assert.equal(
    results[3].error,
    "not started: the run's 1 min deadline had passed (--deadline-min); the next run does it",
  );
  assert.equal(exitCodeOf(results), 1);
  assert.deepEqual(ctx.lines.filter((l) => l.startsWith("warning:")).length, 1);
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
  assert.match(text, /^warm-pool +SKIPPED +skipped, the run's deadline had passed$/m);
  assert.match(text, /^ {2}error: not started: the run's 1 min deadline had passed/m);
  assert.match(text, /^result: 1 skipped, 3 unchanged; 0 API calls, 0 writes$/m);
});

/** A promise and its resolver, for tasks a test finishes in an order of its choosing. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => open = resolve);
  return { promise, open };
}

Deno.test("runTasks runs independent tasks side by side and reports them in the fixed task order", async () => {
  const ctx = context(() => 0, 60_000);
  const events: string[] = [];
  const gates = { pools: gate(), parameters: gate(), token: gate() };
  const task = (name: string, wait: Promise<void>, fail = false) => async () => {
    events.push(`start ${name}`);
    await wait;
    events.push(`end ${name}`);
    if (fail) throw new Error(`${name} broke`);
    return ok(name);
  };
  const running = runTasks([
    ["table", task("table", Promise.resolve())],
    ["resource-pools", task("resource-pools", gates.pools.promise, true)],
    ["parameters", task("parameters", gates.parameters.promise)],
    ["github-token", task("github-token", gates.token.promise)],
  ], ctx);
  // Let every task that can start do so: all three wait on the table only.
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(events, [
    "start table",
    "end table",
    "start resource-pools",
    "start parameters",
    "start github-token",
  ]);
  // Finish them backwards; the one that fails leaves the others running.
  gates.token.open();
  await new Promise((resolve) => setTimeout(resolve, 0));
  gates.parameters.open();
  await new Promise((resolve) => setTimeout(resolve, 0));
  gates.pools.open();
  const results = await running;
  assert.deepEqual(events.slice(5), ["end github-token", "end parameters", "end resource-pools"]);
  assert.deepEqual(results.map((r) => [r.task, r.status, r.summary]), [
    ["table", "unchanged", "table"],
    ["resource-pools", "failed", "failed"],
    ["parameters", "unchanged", "parameters"],
    ["github-token", "unchanged", "github-token"],
  ]);
  assert.equal(results[1].error, "resource-pools broke");
  assert.equal(exitCodeOf(results), 1);
});

Deno.test("runTasks starts a dependent task only once its dependency has finished, even when it failed", async () => {
  const ctx = context(() => 0, 60_000);
  const events: string[] = [];
  const template = gate();
  const results = await runTasks([
    ["launch-template", async () => {
      events.push("start launch-template");
      await template.promise;
      events.push("end launch-template");
      throw new Error("no AMI");
    }],
    ["parameters", () => {
      events.push("parameters");
      template.open(); // parameters does not wait for the template: it opens the template's gate
      return Promise.resolve(ok());
    }],
    ["warm-pool", () => {
      events.push("warm-pool");
      return Promise.resolve(ok());
    }],
  ], ctx);
  assert.deepEqual(events, [
    "start launch-template",
    "parameters",
    "end launch-template",
    "warm-pool",
  ]);
  assert.deepEqual(results.map((r) => [r.task, r.status]), [
    ["launch-template", "failed"],
    ["parameters", "unchanged"],
    ["warm-pool", "unchanged"],
  ]);
});

Deno.test("runTasks reports a task that failed on an endpoint already found down as skipped", async () => {
  const ctx = context(() => 0, 60_000);
  const down = Object.assign(
    new Error("DynamoDB.GetItem not sent: http://127.0.0.1:9 did not answer earlier"),
    { name: ENDPOINT_DOWN, endpoint: "http://127.0.0.1:9" },
  );
  const results = await runTasks([
    ["table", () => Promise.reject(new Error("DynamoDB.DescribeTable got no answer"))],
    ["parameters", () => Promise.reject(down)],
  ], ctx);
  assert.deepEqual(results.map((r) => [r.task, r.status, r.summary]), [
    ["table", "failed", "failed"],
    ["parameters", "skipped", "skipped, http://127.0.0.1:9 did not answer earlier in this run"],
  ]);
  assert.match(results[1].error!, /not sent: http:\/\/127\.0\.0\.1:9 did not answer/);
  assert.equal(exitCodeOf(results), 1);
});

Deno.test("every task depends only on tasks reported before it, so the order has no cycle", () => {
  for (const [i, task] of TASKS.entries()) {
    for (const dependency of DEPENDS_ON[task]) {
      assert.ok(TASKS.indexOf(dependency) < i, `${task} depends on ${dependency}, listed after it`);
    }
  }
  assert.deepEqual(DEPENDS_ON.reaper, ["table"]);
});

Deno.test("runTasks starts the reaper beside launch-template, and its settled() resolves once that task is done", async () => {
  const ctx = context(() => 0, 60_000);
  const events: string[] = [];
  const results = await runTasks([
    ["table", () => Promise.resolve({ summary: "ok", found: {}, changes: [] })],
    ["launch-template", async () => {
      events.push("launch-template started");
      await new Promise((resolve) => setTimeout(resolve, 50));
      events.push("launch-template done");
      throw new Error("EC2 refused");
    }],
    ["reaper", async (task) => {
      events.push("reaper started");
      await task.settled!("launch-template");
      events.push("reaper read the template");
      await task.settled!("github-token"); // not in this run: at once
      return { summary: "ok", found: {}, changes: [] };
    }],
  ], ctx);
  assert.deepEqual(events, [
    "launch-template started",
    "reaper started",
    "launch-template done",
    "reaper read the template",
  ]);
  assert.deepEqual(results.map((r) => r.status), ["unchanged", "failed", "unchanged"]);
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
