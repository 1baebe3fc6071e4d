/**
 * The reaper's runner registrations (lib/reaper/runners.ts): deletions, busy runners, the time
 * budget, no GitHub token.
 */
import assert from "node:assert/strict";
import { reapInstances } from "../../lib/reaper.ts";
import { reconcileTable } from "../../lib/table.ts";
import { type FakeRunner, startFakeGithub } from "../support/github.ts";
import { TEST_PAT, testContext } from "../support/aws.ts";
import { counts, launch, MIN, seed, setup } from "./harness.ts";

Deno.test("reaper deletes runner registrations of terminated instances and leaves busy ones", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await setup(gh);
  const [a, b, c, live] = await launch(ctx, 4);
  for (const id of [a, b, c]) await seed(ctx, id, "running", -1, "run-1");
  await seed(ctx, live, "running", 10, "run-2");
  runners.push(
    { id: 1, name: `${a}-large`, status: "offline", busy: false },
    { id: 2, name: b, status: "online", busy: false }, // DELETE answers 422 below
    { id: 3, name: `${c}-xlarge`, status: "online", busy: true },
    { id: 4, name: `${live}-large`, status: "online", busy: true },
    { id: 5, name: `${a}0-large`, status: "offline", busy: false }, // another id, not a prefix match
    { id: 6, name: "laptop", status: "offline", busy: false },
  );
  for (let i = 7; i < 130; i++) {
    runners.push({ id: i, name: `other-${i}`, status: "offline", busy: false });
  }
  runners.push({ id: 200, name: `${c}-2`, status: "offline", busy: false }); // on the second page
  gh.fail(/^DELETE .*\/actions\/runners\/2$/, {
    status: 422,
    body: { message: "Bad request - Runner is currently running a job" },
  });

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.terminated, 3);
  assert.equal(found.runnersDeleted, 2);
  assert.equal(found.runnersBusy, 2);
  assert.deepEqual(runners.filter((r) => r.id < 7 || r.id === 200).map((r) => r.id), [
    2,
    3,
    4,
    5,
    6,
  ]);
  assert.deepEqual(
    gh.requests.filter((r) => r.method === "DELETE").map((r) => r.path),
    [1, 2, 200].map((id) => `/repos/acme/widgets/actions/runners/${id}`),
  );
  assert.equal(gh.requests.filter((r) => r.method === "GET").length, 2);
  assert.deepEqual(
    outcome.changes.filter((ch) => ch.action === "delete-runner").map((ch) => ch.target),
    [`runner ${a}-large (#1)`, `runner ${c}-2 (#200)`],
  );
  assert.equal(outcome.warnings?.filter((w) => /is busy; left alone/.test(w)).length, 2);
});

Deno.test("reaper reaps without a GitHub token and warns that runners were not cleaned", async () => {
  const ctx = await testContext(["--only", "reaper"], { env: {} });
  await reconcileTable(ctx);
  ctx.setNow(new Date(Date.now() + 60 * MIN));
  const [id] = await launch(ctx, 1);
  await seed(ctx, id, "idle", -1);

  const outcome = await reapInstances(ctx);

  assert.equal(counts(outcome.found).terminated, 1);
  assert.deepEqual(outcome.warnings, [
    "no GitHub token: runner registrations of 1 terminated instances not deleted",
  ]);
});

Deno.test("reaper deletes offline registrations of instances gone in earlier runs, and leaves online, live and foreign ones", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await setup(gh);
  const [live] = await launch(ctx, 1);
  await seed(ctx, live, "running", 10, "run-1");
  const [foreign] = await launch(ctx, 1, false);
  const gone = ["i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb", "i-0cccccccccccccccc"];
  runners.push(
    { id: 1, name: `${gone[0]}-1`, status: "offline", busy: false },
    { id: 2, name: `${gone[0]}-2`, status: "offline", busy: false },
    { id: 3, name: `${gone[1]}-1`, status: "online", busy: false }, // GitHub has not noticed yet
    { id: 4, name: `${gone[2]}-1`, status: "offline", busy: true },
    { id: 5, name: `${live}-1`, status: "offline", busy: false }, // registering right now
    { id: 6, name: `${foreign}-1`, status: "offline", busy: false }, // alive, not ours to judge
    { id: 7, name: "laptop", status: "offline", busy: false },
  );

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.runnersDeleted, 2);
  assert.equal(found.runnersBusy, 1);
  assert.deepEqual(runners.map((r) => r.id), [3, 4, 5, 6, 7]);
  assert.deepEqual(
    outcome.changes.map((c) => c.target),
    [`runner ${gone[0]}-1 (#1)`, `runner ${gone[0]}-2 (#2)`],
  );
});

Deno.test("reaper stops deleting runners when its time budget is spent, and a later run deletes the rest", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await setup(gh);
  for (let i = 1; i <= 3; i++) {
    runners.push({ id: i, name: `i-0${String(i).repeat(16)}-1`, status: "offline", busy: false });
  }
  // Each look at the clock is 600 ms later: the 1 s budget allows one deletion.
  let t = 0;
  const clock = () => (t += 600) - 600;

  const first = await reapInstances(ctx, { runnerBudgetMs: 1000, clock });

  assert.equal(counts(first.found).runnersDeleted, 1);
  assert.equal(counts(first.found).runnersLeft, 2);
  assert.ok(
    first.warnings?.some((w) => /^2 runner registrations .* left for the next run/.test(w)),
  );
  assert.equal(runners.length, 2);
  const second = await reapInstances(ctx);
  assert.equal(counts(second.found).runnersDeleted, 2);
  assert.deepEqual(runners, []);
});
