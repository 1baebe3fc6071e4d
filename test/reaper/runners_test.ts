/**
 * The reaper's runner registrations (lib/reaper/runners.ts): deletions of registrations provably
 * the pool's and provably dead, never of other pools' or systems', never of an instance EC2 is
 * slow to list; busy runners, the time budget, no GitHub token.
 */
import assert from "node:assert/strict";
import {
  CreateTagsCommand,
  DescribeInstancesCommand,
  TerminateInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { OWNER_TAG, poolRunnerLabel } from "../../lib/contract.ts";
import { reapInstances } from "../../lib/reaper.ts";
import { reconcileTable } from "../../lib/table.ts";
import { type ProxyAnswer, startFaultProxy } from "../support/fault_proxy.ts";
import { type FakeRunner, startFakeGithub } from "../support/github.ts";
import { MOTO_URL } from "../support/moto.ts";
import { contextOn, TEST_PAT, type TestContext, testContext } from "../support/aws.ts";
import {
  counts,
  ec2States,
  launch,
  MIN,
  putRecords,
  record,
  seed,
  setup,
  TABLE,
} from "./harness.ts";

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

/** Instances launched (tagged as the pool's unless `tagged` is false) and terminated in EC2. */
async function terminatedInstances(ctx: TestContext, count: number, tagged = true) {
  const ids = await launch(ctx, count, tagged);
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: ids }));
  return ids;
}

/** The labels the bootstrap gives a registration: its run id and the pool's label. */
function poolLabels(ctx: TestContext, table = TABLE) {
  return [
    { name: "run-1", type: "custom" as const },
    { name: poolRunnerLabel(ctx.desired.region, table), type: "custom" as const },
  ];
}

Deno.test("reaper deletes offline registrations of instances EC2 reports terminated, and leaves online, live, unknown and foreign ones", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await setup(gh);
  const [live] = await launch(ctx, 1);
  await seed(ctx, live, "running", 10, "run-1");
  const [foreign] = await launch(ctx, 1, false);
  const gone = await terminatedInstances(ctx, 3); // reaped in earlier runs: no record left
  const unknown = "i-0aaaaaaaaaaaaaaaa"; // EC2 knows no such instance: not proven dead
  const labels = poolLabels(ctx);
  runners.push(
    { id: 1, name: `${gone[0]}-1`, status: "offline", busy: false, labels },
    { id: 2, name: `${gone[0]}-2`, status: "offline", busy: false, labels },
    { id: 3, name: `${gone[1]}-1`, status: "online", busy: false, labels }, // GitHub has not noticed yet
    { id: 4, name: `${gone[2]}-1`, status: "offline", busy: true, labels },
    { id: 5, name: `${live}-1`, status: "offline", busy: false, labels }, // registering right now
    { id: 6, name: `${foreign}-1`, status: "offline", busy: false, labels }, // alive, not ours to judge
    { id: 7, name: `${unknown}-1`, status: "offline", busy: false, labels },
    { id: 8, name: "laptop", status: "offline", busy: false },
  );

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.runnersDeleted, 2);
  assert.equal(found.runnersBusy, 1);
  assert.deepEqual(runners.map((r) => r.id), [3, 4, 5, 6, 7, 8]);
  assert.deepEqual(
    outcome.changes.map((c) => `${c.target}: ${c.detail}`),
    [1, 2].map((n) =>
      `runner ${gone[0]}-${n} (#${n}): instance ${gone[0]}: EC2 reports it terminated; label ${
        labels[1].name
      }`
    ),
  );
});

Deno.test("reaper never deletes registrations of other pools and other systems, whatever their names", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await setup(gh);
  // Another pool of the same repository (another region or table): its label, its tag.
  const [otherPool] = await launch(ctx, 1, false);
  await ctx.clients.ec2.send(
    new CreateTagsCommand({
      Resources: [otherPool],
      Tags: [{ Key: OWNER_TAG, Value: "acme-other-ci-table" }],
    }),
  );
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [otherPool] }));
  // Another system naming runners by instance id (terraform-aws-github-runner): no label of
  // ours, no tag, no record.
  const [otherSystem] = await terminatedInstances(ctx, 1, false);
  // This pool's, proven three ways: its label; its ownership tag (a registration made without
  // the label, by fleet-actions' bootstrap); its record (an untagged instance the table knows).
  const [byLabel] = await terminatedInstances(ctx, 1, false);
  const [byTag] = await terminatedInstances(ctx, 1);
  const [byRecord] = await terminatedInstances(ctx, 1, false);
  await putRecords(ctx, [byRecord], "terminated");
  const defaults = [{ name: "self-hosted", type: "read-only" as const }];
  runners.push(
    {
      id: 1,
      name: `${otherPool}-1`,
      status: "offline",
      busy: false,
      labels: poolLabels(ctx, "acme-other-ci-table"),
    },
    { id: 2, name: otherSystem, status: "offline", busy: false, labels: defaults },
    { id: 3, name: `${otherSystem}-1`, status: "offline", busy: false },
    { id: 4, name: `${byLabel}-1`, status: "offline", busy: false, labels: poolLabels(ctx) },
    { id: 5, name: `${byTag}-1`, status: "offline", busy: false },
    { id: 6, name: `${byRecord}-1`, status: "offline", busy: false },
  );

  const outcome = await reapInstances(ctx);

  assert.deepEqual(runners.map((r) => r.id), [1, 2, 3]);
  assert.deepEqual(
    outcome.changes.filter((c) => c.action === "delete-runner").map((c) => c.detail),
    [
      `instance ${byLabel}: EC2 reports it terminated; label ${poolLabels(ctx)[1].name}`,
      `instance ${byTag}: EC2 reports it terminated; instance tagged the pool's`,
      `instance ${byRecord}: EC2 reports it terminated; instance record`,
    ],
  );
  assert.ok(
    ctx.lines.some((l) => /^reaper: 3 registrations .* not provably this pool's/.test(l)),
    ctx.lines.join("\n"),
  );
});

/**
 * Hides an instance from every DescribeInstances answer, as EC2 can for minutes after a launch:
 * drops the `<item>` of `instancesSet` that holds it.
 */
function hideInstance(id: string) {
  return (answer: ProxyAnswer): ProxyAnswer => {
    const open = `<instanceId>${id}</instanceId>`;
    let body = answer.body;
    for (let at = body.indexOf(open); at >= 0; at = body.indexOf(open)) {
      const start = body.lastIndexOf("<item>", at);
      const end = body.indexOf("</item>", closingOf(body, start)) + "</item>".length;
      body = body.slice(0, start) + body.slice(end);
    }
    return { ...answer, body };
  };
}

/** The index of the `</item>` closing the `<item>` at `start` (items nest). */
function closingOf(body: string, start: number): number {
  let depth = 0;
  const tag = /<\/?item>/g;
  tag.lastIndex = start;
  for (let m = tag.exec(body); m; m = tag.exec(body)) {
    depth += m[0] === "<item>" ? 1 : -1;
    if (depth === 0) return m.index;
  }
  throw new Error("unbalanced <item> in the DescribeInstances answer");
}

Deno.test("reaper keeps the offline registration, the record and the instance of a just-launched instance EC2 does not list yet", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  await using proxy = startFaultProxy({ target: MOTO_URL });
  const direct = await setup(gh);
  // Provision launched it and wrote its record a minute ago; config.sh is done, the listener
  // not connected yet.
  const [young] = await launch(direct, 1);
  await seed(direct, young, "created", 9, "run-1", -1);
  runners.push({
    id: 1,
    name: `${young}-1`,
    status: "offline",
    busy: false,
    labels: poolLabels(direct),
  });
  const ctx = contextOn(direct.desired, direct.network, {
    clientEnv: { AWS_ENDPOINT_URL: proxy.url },
  });
  ctx.setNow(direct.now());
  proxy.rewrite("EC2.DescribeInstances", hideInstance(young), { times: 1000 });
  const seen = await ctx.clients.ec2.send(
    new DescribeInstancesCommand({ Filters: [{ Name: "instance-id", Values: [young] }] }),
  );
  assert.deepEqual(seen.Reservations?.flatMap((r) => r.Instances ?? []), [], "EC2 hides it");

  const outcome = await reapInstances(ctx);

  assert.deepEqual(runners.map((r) => r.id), [1]);
  assert.deepEqual(outcome.changes, []);
  assert.equal((await record(direct, young))?.state, "created");
  assert.deepEqual(await ec2States(direct.clients.ec2, [young]), { [young]: "running" });
});

Deno.test("reaper stops deleting runners when its time budget is spent, and a later run deletes the rest", async () => {
  const runners: FakeRunner[] = [];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], runners });
  const ctx = await setup(gh);
  const gone = await terminatedInstances(ctx, 3);
  gone.forEach((id, i) =>
    runners.push({
      id: i + 1,
      name: `${id}-1`,
      status: "offline",
      busy: false,
      labels: poolLabels(ctx),
    })
  );
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
