/**
 * The reaper's orchestration (lib/reaper.ts): its phases end to end on moto, dry-run, the second
 * run's zero writes, the entry, the run's deadline.
 */
import assert from "node:assert/strict";
import { reapInstances } from "../lib/reaper.ts";
import { type FakeRunner, startFakeGithub } from "./support/github.ts";
import { baseArgs, TEST_PAT, testContext } from "./support/aws.ts";
import { AWS_ENV } from "./support/moto.ts";
import { main } from "../refresh.ts";
import {
  counts,
  ec2States,
  launch,
  MIN,
  record,
  seed,
  setup,
  sorted,
  stored,
  watchTerminations,
} from "./reaper/harness.ts";

Deno.test("reaper terminates expired instances of every live state and touches no live one", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 8);
  const [idleOld, claimedOld, runningOld, createdOld, idleNew, claimedNew, runningNew, createdNew] =
    ids;
  await seed(ctx, idleOld, "idle", -1);
  await seed(ctx, claimedOld, "claimed", -5, "run-1");
  await seed(ctx, runningOld, "running", -60, "run-2");
  await seed(ctx, createdOld, "created", -2);
  await seed(ctx, idleNew, "idle", 5);
  await seed(ctx, claimedNew, "claimed", 1, "run-3");
  await seed(ctx, runningNew, "running", 30, "run-4");
  await seed(ctx, createdNew, "created", 10);
  const expired = [idleOld, claimedOld, runningOld, createdOld];
  const live = [idleNew, claimedNew, runningNew, createdNew];
  const terminations = watchTerminations(ctx);

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.records, 8);
  assert.equal(found.expired, 4);
  assert.equal(found.locked, 4);
  assert.equal(found.terminated, 4);
  assert.equal(found.expunged, 4);
  assert.equal(found.itemsDeleted, 12);
  assert.equal(found.lostRace, 0);
  assert.deepEqual(terminations.map(sorted), [sorted(expired)]);
  const states = await ec2States(ctx.clients.ec2, ids);
  for (const id of expired) assert.equal(states[id], "terminated", id);
  for (const id of live) assert.equal(states[id], "running", id);
  for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
    assert.deepEqual(await stored(ctx, entity), sorted(live), entity);
  }
  assert.equal((await record(ctx, claimedNew))?.runId, "run-3");
  assert.deepEqual(
    outcome.changes.map((c) => [c.action, c.target]),
    sorted(expired).map((id) => ["terminate", `instance ${id}`]),
  );
  const claimed = outcome.changes.find((c) => c.target === `instance ${claimedOld}`);
  assert.match(claimed!.detail!, /^expired claimed \(threshold /);
  assert.match(outcome.summary, /4 expired, 4 locked, 4 terminated, 4 expunged \(12 items\)/);
});

Deno.test("reaper under dry-run lists what it would lock, terminate and delete, and writes nothing", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await setup(gh, ["--dry-run"]);
  const [expired, live, orphan] = await launch(ctx, 3);
  const vanished = "i-0123456789abcdef0";
  await seed(ctx, expired, "idle", -1);
  await seed(ctx, live, "idle", 5);
  await seed(ctx, vanished, "idle", 5);
  runners.push({ id: 1, name: expired, status: "offline", busy: false });
  ctx.counter.reset();

  const outcome = await reapInstances(ctx);

  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(
    outcome.changes.map((ch) => [ch.action, ch.target]),
    [
      ["terminate", `instance ${expired}`],
      ["terminate", `instance ${orphan}`],
      ["expunge", `instance ${vanished}`],
      ["delete-runner", `runner ${expired} (#1)`],
    ],
  );
  assert.match(outcome.summary, /^4 changes would be made: 1 expired, 1 orphans, 1 records/);
  assert.deepEqual(
    await ec2States(ctx.clients.ec2, [expired, live, orphan]),
    { [expired]: "running", [live]: "running", [orphan]: "running" },
  );
  assert.equal((await record(ctx, expired))?.state, "idle");
  assert.equal(runners.length, 1);
  assert.deepEqual(gh.requests.map((r) => r.method), ["GET"]);
});

Deno.test("reaper under dry-run on a new account reports nothing to reap because the table does not exist yet", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  // No table: dry-run does not create it (the table task would).
  const ctx = await testContext(["--only", "reaper", "--github-api-url", gh.url, "--dry-run"]);

  const outcome = await reapInstances(ctx);

  assert.equal(
    outcome.summary,
    "table acme-widgets-ci-table does not exist yet (the table task would create it): " +
      "nothing to reap (0 records, 0 instances alive)",
  );
  assert.deepEqual(outcome.changes, []);
  assert.equal(counts(outcome.found).records, 0);
  assert.equal(ctx.counter.writes(), 0);
  // The table was asked (and answered that it does not exist), EC2 and the runners were read.
  assert.equal(ctx.counter.toJSON()["DynamoDB.Query"], 3);
  assert.ok(ctx.counter.toJSON()["EC2.DescribeInstances"]! >= 1);
  assert.deepEqual(gh.requests.map((r) => [r.method, r.path]), [
    ["GET", "/repos/acme/widgets/actions/runners"],
  ]);
});

Deno.test("reaper under dry-run without a table still plans to terminate a pool instance it finds and delete its runner", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await testContext(["--only", "reaper", "--github-api-url", gh.url, "--dry-run"]);
  const [orphan] = await launch(ctx, 1);
  runners.push({ id: 7, name: orphan, status: "offline", busy: false });
  ctx.setNow(new Date(Date.now() + 60 * MIN));
  ctx.counter.reset();

  const outcome = await reapInstances(ctx);

  assert.deepEqual(outcome.changes.map((c) => [c.action, c.target]), [
    ["terminate", `instance ${orphan}`],
    ["delete-runner", `runner ${orphan} (#7)`],
  ]);
  assert.match(outcome.summary, /^table acme-widgets-ci-table does not exist yet .*: 2 changes/);
  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(await ec2States(ctx.clients.ec2, [orphan]), { [orphan]: "running" });
  assert.equal(runners.length, 1);
  assert.deepEqual(gh.requests.map((r) => r.method), ["GET"]);
});

Deno.test("reaper fails when the table does not exist and it is not a dry run", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  // Without dry-run the table task creates the table first: a missing one is an error.
  const ctx = await testContext(["--only", "reaper", "--github-api-url", gh.url]);

  await assert.rejects(reapInstances(ctx), { name: "ResourceNotFoundException" });
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("reaper's second run writes nothing and reads no terminated record", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 6);
  for (const [i, id] of ids.entries()) await seed(ctx, id, "idle", i < 4 ? -1 : 10);
  await launch(ctx, 1); // an orphan
  const first = await reapInstances(ctx);
  assert.equal(counts(first.found).terminated, 5);
  ctx.counter.reset();
  const requests = gh.requests.length;

  const second = await reapInstances(ctx);

  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(second.changes, []);
  assert.equal(counts(second.found).itemsRead, 2);
  assert.equal(second.summary, "nothing to reap (2 records, 2 instances alive)");
  const aws = Object.entries(ctx.counter.toJSON()).filter(([op]) => !op.startsWith("GitHub."));
  assert.deepEqual(Object.fromEntries(aws), {
    "DynamoDB.Query": 3, // instance records, heartbeats, worker signals
    "EC2.DescribeInstances": 1,
    "EC2.DescribeLaunchTemplates": 1,
  });
  assert.deepEqual(gh.requests.slice(requests).map((r) => r.method), ["GET"]);
});

Deno.test("refresh --only reaper reaps through the entry and prints counts without secrets", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await setup(gh);
  ctx.setNow(new Date()); // main() runs on the real clock
  const [old, young] = await launch(ctx, 2);
  await seed(ctx, old, "idle", -60);
  await seed(ctx, young, "running", 60, "run-1");
  runners.push({ id: 1, name: `${old}-large`, status: "offline", busy: false });
  const stdout: string[] = [];
  const stderr: string[] = [];

  const code = await main(
    [...baseArgs(ctx.network), "--only", "reaper", "--github-api-url", gh.url],
    { ...AWS_ENV, GITHUB_TOKEN: TEST_PAT },
    {
      stdout: (t) => stdout.push(t),
      stderr: (t) => stderr.push(t),
      readTextFile: () => "",
    },
  );

  const out = stdout.join("\n");
  assert.equal(code, 0, stderr.join("\n"));
  assert.match(
    out,
    /^reaper +changed +1 expired, 1 locked, 1 terminated, 1 expunged \(3 items\), 1 runners deleted$/m,
  );
  assert.match(out, new RegExp(`^  terminate instance ${old}: expired idle \\(threshold `, "m"));
  assert.match(
    out,
    new RegExp(
      `^  delete-runner runner ${old}-large \\(#1\\): instance ${old}: terminated by this run$`,
      "m",
    ),
  );
  assert.match(stderr.join("\n"), /reaper: 2 instance records, 2 pool instances alive/);
  assert.ok(!`${out}${stderr}`.includes(TEST_PAT));
  assert.deepEqual(await ec2States(ctx.clients.ec2, [old, young]), {
    [old]: "terminated",
    [young]: "running",
  });
});

Deno.test("reaper starts no new work once the run's deadline has passed, says what it left, and the next run finishes", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  let late = false;
  const ctx = await setup(gh);
  const ids = await launch(ctx, 3);
  for (const id of ids) await seed(ctx, id, "idle", -1);
  // The deadline passes while the instances are being terminated.
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "TerminateInstancesCommand") late = true;
      return next(args);
    },
    { step: "initialize", name: "deadline" },
  );
  const budget = { totalMs: 60_000, expired: () => late, remainingMs: () => late ? 0 : 60_000 };

  await assert.rejects(
    reapInstances({ ...ctx, budget }),
    /3 terminated.*the run's deadline passed: 9 item deletions, runner cleanup not started; the next run does them/,
  );
  assert.equal(ctx.counter.counts.get("DynamoDB.BatchWriteItem"), undefined);
  assert.deepEqual(await stored(ctx, "HEARTBEAT"), sorted(ids));

  late = false;
  const next = await reapInstances({ ...ctx, budget });
  assert.equal(counts(next.found).expunged, 3);
  for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
    assert.deepEqual(await stored(ctx, entity), [], entity);
  }
});
