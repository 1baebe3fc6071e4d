import assert from "node:assert/strict";
import {
  CreateFleetCommand,
  CreateLaunchTemplateCommand,
  DescribeInstancesCommand,
  type EC2Client,
  ModifyInstanceAttributeCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import {
  BatchWriteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
  UpdateCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, OWNER_TAG, timestamp } from "../lib/contract.ts";
import { type ReaperCounts, reapInstances, terminateOwned } from "../lib/reaper.ts";
import { reconcileTable } from "../lib/table.ts";
import { type FakeGithub, type FakeRunner, startFakeGithub } from "./support/github.ts";
import {
  baseArgs,
  contextOn,
  TEST_PAT,
  type TestContext,
  testContext,
  withDesired,
} from "./support/aws.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { AWS_ENV, MOTO_URL } from "./support/moto.ts";
import { main } from "../refresh.ts";

const TABLE = "acme-widgets-ci-table";
const AMI = "ami-1e749f67";
const MIN = 60_000;

/**
 * A context for the reaper on a fresh table, with GitHub pointed at the fake server; the clock is
 * an hour past the real one (moto stamps launch times with the real clock).
 */
async function setup(gh: FakeGithub, args: string[] = []): Promise<TestContext> {
  const ctx = await testContext(["--only", "reaper", "--github-api-url", gh.url, ...args]);
  await reconcileTable({ ...ctx, dryRun: false });
  ctx.setNow(new Date(Date.now() + 60 * MIN));
  ctx.counter.reset();
  return ctx;
}

/** Launches instances in moto, tagged as the pool's unless `tagged` is false. */
async function launch(ctx: TestContext, count: number, tagged = true): Promise<string[]> {
  const out = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      ImageId: AMI,
      MinCount: count,
      MaxCount: count,
      InstanceType: "t3.micro",
      ...(tagged
        ? {
          TagSpecifications: [{
            ResourceType: "instance",
            Tags: [{ Key: OWNER_TAG, Value: TABLE }],
          }],
        }
        : {}),
    }),
  );
  return out.Instances!.map((i) => i.InstanceId!);
}

function at(ctx: TestContext, minutes: number): string {
  return timestamp(new Date(ctx.now().getTime() + minutes * MIN));
}

/**
 * Writes an instance record (written `updatedMin` ago) with its worker signal and a heartbeat
 * (fresh: a live instance beats every 5 s).
 */
async function seed(
  ctx: TestContext,
  id: string,
  state: string,
  thresholdMin: number,
  runId = "",
  updatedMin = -30,
): Promise<void> {
  const updated = new Date(ctx.now().getTime() + updatedMin * MIN);
  const put = (
    entity: "INSTANCE" | "HEARTBEAT" | "WS",
    attributes: Record<string, unknown>,
    at = updated,
  ) =>
    ctx.clients.ddb.send(
      new PutCommand({ TableName: TABLE, Item: item(entity, id, at, attributes) }),
    );
  await put("INSTANCE", {
    state,
    threshold: at(ctx, thresholdMin),
    runId,
    resourceClass: "large",
    instanceType: "t3.micro",
    usageClass: "on-demand",
  });
  await put("HEARTBEAT", { value: "PING" }, ctx.now());
  await put("WS", { value: { state, runId } });
}

async function ec2States(ec2: EC2Client, ids: string[]): Promise<Record<string, string>> {
  const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }));
  return Object.fromEntries(
    out.Reservations!.flatMap((r) => r.Instances!).map((i) => [i.InstanceId!, i.State!.Name!]),
  );
}

/** The ids stored under an entity. */
async function stored(ctx: TestContext, entity: string): Promise<string[]> {
  const out = await ctx.clients.ddb.send(
    new QueryCommand({
      TableName: TABLE,
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: { ":pk": `TYPE#${entity}` },
    }),
  );
  return out.Items!.map((i) => i.identifier).sort();
}

async function record(ctx: TestContext, id: string) {
  const out = await ctx.clients.ddb.send(
    new GetCommand({ TableName: TABLE, Key: { PK: "TYPE#INSTANCE", SK: `ID#${id}` } }),
  );
  return out.Item;
}

/** Records the instance ids of every TerminateInstances call. */
function watchTerminations(ctx: TestContext): string[][] {
  const calls: string[][] = [];
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "TerminateInstancesCommand") {
        calls.push([...(args.input as { InstanceIds: string[] }).InstanceIds]);
      }
      return next(args);
    },
    { step: "initialize", name: "watchTerminations" },
  );
  return calls;
}

const counts = (found: Record<string, unknown>) => found as unknown as ReaperCounts;
const sorted = (ids: string[]) => [...ids].sort();

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

Deno.test("reaper skips an instance claimed between the read and the lock, which keeps running", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [raced, reaped] = await launch(ctx, 2);
  await seed(ctx, raced, "idle", -1);
  await seed(ctx, reaped, "idle", -1);
  // provision claims `raced` right before the reaper's first conditional update reaches DynamoDB.
  let claimed = false;
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => async (args) => {
      if (!claimed && /^Update/.test(context.commandName ?? "")) {
        claimed = true;
        await ctx.clients.ddb.send(
          new UpdateCommand({
            TableName: TABLE,
            Key: { PK: "TYPE#INSTANCE", SK: `ID#${raced}` },
            UpdateExpression: "SET #s = :claimed, runId = :run, threshold = :t",
            ExpressionAttributeNames: { "#s": "state" },
            ExpressionAttributeValues: {
              ":claimed": "claimed",
              ":run": "run-9",
              ":t": at(ctx, 30),
            },
          }),
        );
      }
      return next(args);
    },
    { step: "initialize", name: "provisionClaims" },
  );
  const terminations = watchTerminations(ctx);

  const outcome = await reapInstances(withConcurrency(ctx, 1));

  const found = counts(outcome.found);
  assert.equal(found.expired, 2);
  assert.equal(found.lostRace, 1);
  assert.equal(found.locked, 1);
  assert.deepEqual(terminations, [[reaped]]);
  assert.deepEqual(await ec2States(ctx.clients.ec2, [raced, reaped]), {
    [raced]: "running",
    [reaped]: "terminated",
  });
  const kept = await record(ctx, raced);
  assert.equal(kept?.state, "claimed");
  assert.equal(kept?.runId, "run-9");
  assert.deepEqual(await stored(ctx, "HEARTBEAT"), [raced]);
  assert.match(outcome.summary, /1 lost to another writer/);
});

/** The first update above must be the raced one: lock one record at a time. */
function withConcurrency(ctx: TestContext, concurrency: number): TestContext {
  const desired = { ...ctx.desired, reaper: { ...ctx.desired.reaper, concurrency } };
  return { ...ctx, desired };
}

Deno.test("reaper reads every page when expired records outnumber one page", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 6);
  for (const id of ids) await seed(ctx, id, "idle", -1);
  const [live] = await launch(ctx, 1);
  await seed(ctx, live, "running", 20, "run-1");

  const outcome = await reapInstances(ctx, { pageSize: 2 });

  const found = counts(outcome.found);
  assert.equal(found.pages, 4);
  assert.equal(found.records, 7);
  assert.equal(found.itemsRead, 7);
  assert.equal(found.terminated, 6);
  // 4 pages of instance records, 4 of heartbeats, 4 of worker signals.
  assert.equal(ctx.counter.counts.get("DynamoDB.Query"), 12);
  assert.deepEqual(await stored(ctx, "INSTANCE"), [live]);
  assert.ok(ctx.lines.some((l) => /read 6 instance records \(3 pages\)/.test(l)), ctx.lines.join());
});

Deno.test("reaper's lock sets DESIGN.md's fields and a TTL; a crash before termination is healed next run", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--terminated-retention-hours", "48"]);
  const [id] = await launch(ctx, 1);
  await seed(ctx, id, "running", -3, "run-7");
  // The first run dies between the phases: TerminateInstances never reaches EC2.
  let crash = true;
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      if (crash && context.commandName === "TerminateInstancesCommand") {
        throw new Error("connection reset");
      }
      return next(args);
    },
    { step: "initialize", name: "crash" },
  );

  await assert.rejects(reapInstances(ctx), /1 locked.*1 operations failed.*connection reset/);

  const now = ctx.now();
  const locked = await record(ctx, id);
  assert.equal(locked?.state, "terminated");
  assert.equal(locked?.threshold, timestamp(now));
  assert.equal(locked?.runId, "");
  assert.equal(locked?.updatedAt, timestamp(now));
  assert.equal(locked?.expiresAt, Math.floor(now.getTime() / 1000) + 48 * 3600);
  assert.equal((await ec2States(ctx.clients.ec2, [id]))[id], "running");

  crash = false;
  ctx.setNow(new Date(now.getTime() + 10 * MIN));
  const outcome = await reapInstances(ctx);
  const found = counts(outcome.found);
  assert.equal(found.unfinished, 1);
  assert.equal(found.terminated, 1);
  assert.equal(found.locked, 0);
  assert.equal((await ec2States(ctx.clients.ec2, [id]))[id], "terminated");
  assert.deepEqual(await stored(ctx, "INSTANCE"), []);
  assert.deepEqual(await stored(ctx, "WS"), []);
  assert.match(outcome.changes[0].detail!, /record already terminated, instance still alive/);
});

Deno.test("reaper terminates tagged orphans past the grace period and spares young or foreign ones", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--orphan-grace-min", "20"]);
  const [orphan, young] = await launch(ctx, 2);
  const [foreign] = await launch(ctx, 1, false);
  const [pooled] = await launch(ctx, 1);
  await seed(ctx, pooled, "idle", 5);
  // `young` launched 15 minutes ago by the clock: under the 20-minute grace period.
  const launchTimes = await ec2LaunchTimes(ctx.clients.ec2, [orphan, young]);
  ctx.setNow(new Date(launchTimes[young] + 15 * MIN));
  const first = await reapInstances(ctx);
  assert.equal(counts(first.found).orphans, 0);
  assert.deepEqual(first.changes, []);

  ctx.setNow(new Date(launchTimes[orphan] + 21 * MIN));
  await seed(ctx, pooled, "idle", 5);
  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.orphans, 2);
  assert.deepEqual(
    await ec2States(ctx.clients.ec2, [orphan, young, foreign, pooled]),
    { [orphan]: "terminated", [young]: "terminated", [foreign]: "running", [pooled]: "running" },
  );
  assert.match(outcome.changes[0].detail!, /^orphan: no record, launched /);
  assert.deepEqual(await stored(ctx, "INSTANCE"), [pooled]);
});

async function ec2LaunchTimes(ec2: EC2Client, ids: string[]): Promise<Record<string, number>> {
  const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }));
  return Object.fromEntries(
    out.Reservations!.flatMap((r) => r.Instances!).map((
      i,
    ) => [i.InstanceId!, i.LaunchTime!.getTime()]),
  );
}

Deno.test("reaper marks records of vanished instances terminated and deletes them", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [vanished, alive] = await launch(ctx, 2);
  const [untagged] = await launch(ctx, 1, false);
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [vanished] }));
  const never = "i-0123456789abcdef0";
  const fresh = "i-0fedcba9876543210";
  await seed(ctx, vanished, "idle", 5);
  await seed(ctx, never, "running", 20, "run-1");
  await seed(ctx, fresh, "created", 5, "", -2); // written 2 minutes ago: EC2 may not list it yet
  await seed(ctx, alive, "idle", 5);
  await seed(ctx, untagged, "claimed", 5, "run-2");
  ctx.counter.reset();

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.lost, 2);
  assert.equal(found.terminated, 0);
  assert.equal(ctx.counter.counts.get("EC2.TerminateInstances"), undefined);
  assert.deepEqual(await stored(ctx, "INSTANCE"), sorted([fresh, alive, untagged]));
  assert.deepEqual(await stored(ctx, "HEARTBEAT"), sorted([fresh, alive, untagged]));
  assert.deepEqual(
    sorted(outcome.changes.map((c) => c.target)),
    sorted([`instance ${vanished}`, `instance ${never}`]),
  );
  assert.ok(outcome.changes.every((c) => c.action === "expunge"));
  assert.equal((await ec2States(ctx.clients.ec2, [untagged]))[untagged], "running");
});

Deno.test("reaper retries a batch without the ids EC2 does not know or may not terminate", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 3);
  const [protectedId] = await ec2RunProtected(ctx);
  // Proven the pool's when read, unknown to EC2 when terminated.
  const unknown = ["i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"];
  const terminations = watchTerminations(ctx);

  const result = await terminateOwned(
    ctx.clients.ec2,
    [...ids, ...unknown, protectedId].map((id) => ({ id, proof: "tag" as const })),
    ctx.log,
  );

  assert.deepEqual(sorted(result.terminated), sorted(ids));
  assert.deepEqual(sorted(result.notFound), sorted(unknown));
  assert.deepEqual(result.refused.map(([id]) => id), [protectedId]);
  assert.deepEqual(result.errors, []);
  assert.equal(terminations.length, 3);
  assert.deepEqual(sorted(terminations.at(-1)!), sorted(ids));
  for (const state of Object.values(await ec2States(ctx.clients.ec2, ids))) {
    assert.equal(state, "terminated");
  }
  assert.equal((await ec2States(ctx.clients.ec2, [protectedId]))[protectedId], "running");
});

Deno.test("reaper refuses to terminate an instance given without a proof of ownership", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [id] = await launch(ctx, 1, false);
  const terminations = watchTerminations(ctx);

  await assert.rejects(
    terminateOwned(ctx.clients.ec2, [{ id }], ctx.log),
    new RegExp(`refusing to terminate instances not proven the pool's: ${id}`),
  );
  assert.deepEqual(terminations, []);
});

Deno.test("reaper expunges expired records of instances EC2 does not know without terminating them, and keeps the record of one EC2 refuses", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [protectedId] = await ec2RunProtected(ctx);
  const unknown = ["i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"];
  for (const id of [...unknown, protectedId]) await seed(ctx, id, "idle", -1);
  const terminations = watchTerminations(ctx);

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.locked, 3);
  assert.equal(found.refused, 1);
  assert.equal(found.expunged, 2);
  assert.deepEqual(terminations, [[protectedId]]);
  assert.deepEqual(await stored(ctx, "INSTANCE"), [protectedId]);
  assert.equal((await record(ctx, protectedId))?.state, "terminated");
  assert.ok(outcome.warnings?.some((w) => w.startsWith(`${protectedId}: EC2 refused`)));
  assert.deepEqual(
    sorted(outcome.changes.map((c) => `${c.action} ${c.target}`)),
    sorted(unknown.map((id) => `expunge instance ${id}`)),
  );
});

async function ec2RunProtected(ctx: TestContext): Promise<string[]> {
  const out = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      ImageId: AMI,
      MinCount: 1,
      MaxCount: 1,
      TagSpecifications: [{ ResourceType: "instance", Tags: [{ Key: OWNER_TAG, Value: TABLE }] }],
    }),
  );
  const id = out.Instances![0].InstanceId!;
  await ctx.clients.ec2.send(
    new ModifyInstanceAttributeCommand({ InstanceId: id, DisableApiTermination: { Value: true } }),
  );
  return [id];
}

Deno.test("reaper retries unprocessed BatchWriteItem items with growing backoff", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 2);
  for (const id of ids) await seed(ctx, id, "idle", -1);
  // DynamoDB processes one request of the first two batch writes and hands the rest back.
  let throttled = 2;
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => async (args) => {
      if (throttled === 0 || !/^BatchWrite/.test(context.commandName ?? "")) return next(args);
      throttled--;
      const input = args.input as { RequestItems: Record<string, unknown[]> };
      const requests = input.RequestItems[TABLE];
      const result = await next({
        ...args,
        input: { ...input, RequestItems: { [TABLE]: requests.slice(0, 1) } },
      });
      (result.output as { UnprocessedItems: unknown }).UnprocessedItems = {
        [TABLE]: requests.slice(1),
      };
      return result;
    },
    { step: "serialize", name: "throttle", priority: "high" },
  );
  const waits: number[] = [];

  const outcome = await reapInstances(ctx, {
    sleep: (ms) => {
      waits.push(ms);
      return Promise.resolve();
    },
  });

  assert.equal(counts(outcome.found).itemsDeleted, 6);
  // Heartbeats and worker signals: 1 request and 2 retries; then the records: 1 request.
  assert.equal(ctx.counter.counts.get("DynamoDB.BatchWriteItem"), 4);
  assert.equal(waits.length, 2);
  assert.ok(waits[0] >= 50 && waits[0] <= 150, `${waits}`);
  assert.ok(waits[1] >= 100 && waits[1] <= 300, `${waits}`);
  for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
    assert.deepEqual(await stored(ctx, entity), [], entity);
  }
});

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
    new RegExp(`^  delete-runner runner ${old}-large \\(#1\\): instance ${old} is gone$`, "m"),
  );
  assert.match(stderr.join("\n"), /reaper: 2 instance records, 2 pool instances alive/);
  assert.ok(!`${out}${stderr}`.includes(TEST_PAT));
  assert.deepEqual(await ec2States(ctx.clients.ec2, [old, young]), {
    [old]: "terminated",
    [young]: "running",
  });
});

// ---------------------------------------------------------------------------------------------
// Ownership: the table is not proof.

/** Launches an instance tagged as another pool's. */
async function launchForeignPool(ctx: TestContext): Promise<string> {
  const out = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      ImageId: AMI,
      MinCount: 1,
      MaxCount: 1,
      TagSpecifications: [{
        ResourceType: "instance",
        Tags: [{ Key: OWNER_TAG, Value: "other-pool-ci-table" }],
      }],
    }),
  );
  return out.Instances![0].InstanceId!;
}

Deno.test("reaper never terminates an instance outside the pool that a terminated or expired record names, and reports it", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  // Any runner job can write these records: EC2 says none of the instances is the pool's.
  const [untaggedA, untaggedB] = await launch(ctx, 2, false);
  const otherPool = await launchForeignPool(ctx);
  await seed(ctx, untaggedA, "terminated", -10);
  await seed(ctx, untaggedB, "idle", -10);
  await seed(ctx, otherPool, "running", -10, "run-1");
  const terminations = watchTerminations(ctx);
  ctx.counter.reset();

  const outcome = await reapInstances(ctx);

  assert.deepEqual(terminations, []);
  assert.equal(ctx.counter.writes(), 0);
  const found = counts(outcome.found);
  assert.equal(found.foreign, 3);
  assert.equal(found.terminated, 0);
  assert.deepEqual(outcome.changes, []);
  assert.deepEqual(await ec2States(ctx.clients.ec2, [untaggedA, untaggedB, otherPool]), {
    [untaggedA]: "running",
    [untaggedB]: "running",
    [otherPool]: "running",
  });
  for (const id of [untaggedA, untaggedB, otherPool]) {
    assert.ok(
      outcome.warnings?.some((w) =>
        w.startsWith(`record ${id} `) && /not proven the pool's.*not terminated/.test(w)
      ),
      `${id}: ${outcome.warnings}`,
    );
  }
  assert.deepEqual(await stored(ctx, "INSTANCE"), sorted([untaggedA, untaggedB, otherPool]));
});

/** A launch template of the pool (tagged as the pool's) whose instances get no tag of their own. */
async function untaggingTemplate(ctx: TestContext, name: string, owned = true): Promise<string> {
  const out = await ctx.clients.ec2.send(
    new CreateLaunchTemplateCommand({
      LaunchTemplateName: name,
      LaunchTemplateData: { ImageId: AMI, InstanceType: "t3.micro" },
      ...(owned
        ? {
          TagSpecifications: [{
            ResourceType: "launch-template",
            Tags: [{ Key: OWNER_TAG, Value: TABLE }],
          }],
        }
        : {}),
    }),
  );
  return out.LaunchTemplate!.LaunchTemplateId!;
}

async function launchFrom(ctx: TestContext, templateId: string, count: number): Promise<string[]> {
  const out = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      LaunchTemplate: { LaunchTemplateId: templateId },
      MinCount: count,
      MaxCount: count,
    }),
  );
  for (const instance of out.Instances!) {
    assert.ok(!instance.Tags?.some((t) => t.Key === OWNER_TAG), "launched without the tag");
  }
  return out.Instances!.map((i) => i.InstanceId!);
}

Deno.test("reaper terminates untagged instances launched from the pool's template, proven by EC2's aws:ec2launchtemplate:id", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const template = await untaggingTemplate(ctx, "acme-widgets-ci-launch-template");
  const stranger = await untaggingTemplate(ctx, "someone-elses-template", false);
  const [expired, unfinished, orphan, live] = await launchFrom(ctx, template, 4);
  const [foreign] = await launchFrom(ctx, stranger, 1);
  await seed(ctx, expired, "idle", -1);
  await seed(ctx, unfinished, "terminated", -5);
  await seed(ctx, live, "running", 30, "run-1");
  await seed(ctx, foreign, "terminated", -5);
  const terminations = watchTerminations(ctx);

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.templates, 1);
  assert.equal(found.alive, 4);
  assert.equal(found.orphans, 1);
  assert.equal(found.foreign, 1);
  assert.deepEqual(terminations.map(sorted), [sorted([expired, unfinished, orphan])]);
  assert.deepEqual(
    await ec2States(ctx.clients.ec2, [expired, unfinished, orphan, live, foreign]),
    {
      [expired]: "terminated",
      [unfinished]: "terminated",
      [orphan]: "terminated",
      [live]: "running",
      [foreign]: "running",
    },
  );
  assert.deepEqual(await stored(ctx, "INSTANCE"), sorted([live, foreign]));
});

// ---------------------------------------------------------------------------------------------
// Never guess.

Deno.test("reaper never expires a record whose threshold is not a strict UTC timestamp, and warns about it", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const odd = [
    "1700000000", // epoch seconds: compared as text it sorts before any date
    "",
    "soon",
    "2025-01-01", // a date alone
    "2025-01-01T00:00:00+00:00", // an offset, not Z
    "2025-13-01T00:00:00Z", // no 13th month
    "2025-02-30T00:00:00Z",
  ];
  const ids = await launch(ctx, odd.length + 1);
  for (const [i, threshold] of odd.entries()) {
    await seed(ctx, ids[i], "idle", 5);
    await ctx.clients.ddb.send(
      new UpdateCommand({
        TableName: TABLE,
        Key: { PK: "TYPE#INSTANCE", SK: `ID#${ids[i]}` },
        UpdateExpression: "SET threshold = :t",
        ExpressionAttributeValues: { ":t": threshold },
      }),
    );
  }
  // Fractional seconds are tolerated: this one expired a minute ago.
  const fractional = ids[odd.length];
  await seed(ctx, fractional, "idle", 5);
  await ctx.clients.ddb.send(
    new UpdateCommand({
      TableName: TABLE,
      Key: { PK: "TYPE#INSTANCE", SK: `ID#${fractional}` },
      UpdateExpression: "SET threshold = :t",
      ExpressionAttributeValues: { ":t": new Date(ctx.now().getTime() - MIN).toISOString() },
    }),
  );
  const terminations = watchTerminations(ctx);

  const outcome = await reapInstances(ctx);

  assert.deepEqual(terminations, [[fractional]]);
  const found = counts(outcome.found);
  assert.equal(found.invalid, odd.length);
  for (const [i, threshold] of odd.entries()) {
    assert.ok(
      outcome.warnings?.includes(
        `record ${ids[i]} has threshold ${
          JSON.stringify(threshold)
        }, not a UTC timestamp like 2025-04-24T18:31:04Z; it never expires by threshold`,
      ),
      `${threshold}: ${outcome.warnings}`,
    );
  }
  const states = await ec2States(ctx.clients.ec2, ids);
  for (const id of ids.slice(0, odd.length)) assert.equal(states[id], "running", id);
});

Deno.test("reaper recognises its own lock whose reply was lost and terminates the instance", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  // DynamoDB applies the first lock, but its reply never arrives: the SDK retries the update,
  // whose condition now fails on the lock's own write.
  await using proxy = startFaultProxy({ target: MOTO_URL });
  const seeded = await setup(gh);
  const ctx = {
    ...contextOn(seeded.desired, seeded.network, { clientEnv: { AWS_ENDPOINT_URL: proxy.url } }),
    now: seeded.now,
  };
  const [id] = await launch(seeded, 1);
  await seed(seeded, id, "claimed", -1, "run-1");
  proxy.inject("DynamoDB.UpdateItem", "lose-reply");

  const outcome = await reapInstances(ctx);

  assert.deepEqual(
    proxy.requests.filter((r) => r.operation === "DynamoDB.UpdateItem"),
    [{ operation: "DynamoDB.UpdateItem", fault: "lose-reply" }, {
      operation: "DynamoDB.UpdateItem",
    }],
    proxy.describe(),
  );
  const found = counts(outcome.found);
  assert.equal(found.locked, 1);
  assert.equal(found.lostRace, 0);
  assert.equal(found.terminated, 1);
  assert.equal((await ec2States(ctx.clients.ec2, [id]))[id], "terminated");
  assert.ok(ctx.lines.some((l) => l.includes(`${id} was already locked by this run`)));
});

Deno.test("reaper sends at most 200 filter values per DescribeInstances call, whatever the number of records", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  // After a migration from fleet-actions: hundreds of terminated records of long-gone instances.
  const gone = Array.from({ length: 450 }, (_, i) => `i-0${i.toString(16).padStart(16, "0")}`);
  await putRecords(ctx, gone, "terminated");
  const [live] = await launch(ctx, 1);
  await seed(ctx, live, "idle", 10);
  gh.runners.push({ id: 1, name: `${gone[0]}-1`, status: "offline", busy: false });
  const filters: number[] = [];
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "DescribeInstancesCommand") {
        const input = args.input as { Filters?: { Values?: string[] }[]; InstanceIds?: string[] };
        filters.push(
          (input.Filters ?? []).reduce((n, f) => n + (f.Values?.length ?? 0), 0) +
            (input.InstanceIds?.length ?? 0),
        );
      }
      return next(args);
    },
    { step: "initialize", name: "captureFilters" },
  );

  const outcome = await reapInstances(ctx);

  assert.ok(filters.length >= 4, `${filters}`);
  assert.ok(filters.every((n) => n <= 200), `filter values per call: ${filters}`);
  assert.equal(counts(outcome.found).expunged, 450);
  assert.deepEqual(await stored(ctx, "INSTANCE"), [live]);
});

/** Writes instance records (with heartbeat and worker signal) in batches. */
async function putRecords(ctx: TestContext, ids: string[], state: string): Promise<void> {
  const updated = new Date(ctx.now().getTime() - 30 * MIN);
  const items = ids.flatMap((id) => [
    item("INSTANCE", id, updated, { state, threshold: at(ctx, -30), runId: "" }),
    item("HEARTBEAT", id, updated, { value: "PING" }),
    item("WS", id, updated, { value: { state, runId: "" } }),
  ]);
  for (let i = 0; i < items.length; i += 25) {
    await ctx.clients.ddb.send(
      new BatchWriteCommand({
        RequestItems: { [TABLE]: items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } })) },
      }),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Never leave a trace.

/** Records the keys (`ENTITY id`) of every BatchWriteItem call, in order. */
function watchBatchWrites(ctx: TestContext): string[][] {
  const calls: string[][] = [];
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "BatchWriteItemCommand") {
        const input = args.input as {
          RequestItems: Record<string, { DeleteRequest: { Key: { PK: string; SK: string } } }[]>;
        };
        calls.push(
          input.RequestItems[TABLE].map(({ DeleteRequest: { Key } }) =>
            `${Key.PK.slice(5)} ${Key.SK.slice(3)}`
          ),
        );
      }
      return next(args);
    },
    { step: "initialize", name: "watchBatchWrites" },
  );
  return calls;
}

Deno.test("reaper deletes an instance's heartbeat and worker signal before its record, never in the same request", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 9); // 27 keys: more than one request of 25
  for (const id of ids) await seed(ctx, id, "idle", -1);
  const calls = watchBatchWrites(ctx);

  await reapInstances(ctx);

  const callOf = (key: string) => calls.findIndex((keys) => keys.includes(key));
  for (const id of ids) {
    const record = callOf(`INSTANCE ${id}`);
    assert.ok(record >= 0, id);
    assert.ok(callOf(`HEARTBEAT ${id}`) < record, `${id}: ${JSON.stringify(calls)}`);
    assert.ok(callOf(`WS ${id}`) < record, `${id}: ${JSON.stringify(calls)}`);
  }
  for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
    assert.deepEqual(await stored(ctx, entity), [], entity);
  }
});

Deno.test("reaper leaves no artifact behind when a delete request fails: the next run finishes the cleanup", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 9);
  for (const id of ids) await seed(ctx, id, "idle", -1);
  // The second BatchWriteItem of the run fails for good.
  let batch = 0;
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === "BatchWriteItemCommand" && ++batch === 2) {
        throw Object.assign(new Error("denied"), { name: "AccessDeniedException" });
      }
      return next(args);
    },
    { step: "initialize", name: "failSecondBatch" },
  );

  await assert.rejects(reapInstances(ctx), /AccessDeniedException: denied/);
  await reapInstances(ctx);

  for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
    assert.deepEqual(await stored(ctx, entity), [], entity);
  }
  ctx.counter.reset();
  await reapInstances(ctx);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("reaper sweeps heartbeats and worker signals without a record once older than the grace period", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--orphan-grace-min", "15"]);
  const put = (entity: "HEARTBEAT" | "WS", id: string, minutes: number) =>
    ctx.clients.ddb.send(
      new PutCommand({
        TableName: TABLE,
        Item: item(entity, id, new Date(ctx.now().getTime() + minutes * MIN), { value: "PING" }),
      }),
    );
  // A shutting-down instance rewrote its heartbeat after its record was expunged.
  const stale = "i-0aaaaaaaaaaaaaaaa";
  const young = "i-0bbbbbbbbbbbbbbbb";
  await put("HEARTBEAT", stale, -20);
  await put("WS", stale, -40);
  await put("HEARTBEAT", young, -2);
  const [live] = await launch(ctx, 1);
  await seed(ctx, live, "idle", 10, "", -60); // its artifacts are old, but it has a record

  const outcome = await reapInstances(ctx);

  assert.equal(counts(outcome.found).strays, 2);
  assert.deepEqual(await stored(ctx, "HEARTBEAT"), sorted([young, live]));
  assert.deepEqual(await stored(ctx, "WS"), [live]);
  assert.deepEqual(
    outcome.changes.map((c) => `${c.action} ${c.target}`).sort(),
    [`delete heartbeat ${stale}`, `delete worker signal ${stale}`],
  );
  ctx.counter.reset();
  await reapInstances(ctx);
  assert.equal(ctx.counter.writes(), 0);
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

Deno.test("reaper counts instances of a legacy launch template as the pool's only when --legacy-launch-template-ids names it", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  // fleet-actions' template, never tagged for the pool; its instances carry no ownership tag.
  const legacy = await untaggingTemplate(ctx, "old-fleet-template", false);
  const [expired, orphan] = await launchFrom(ctx, legacy, 2);
  await seed(ctx, expired, "terminated", -5);

  const before = await reapInstances(ctx);
  assert.equal(counts(before.found).foreign, 1);
  assert.equal(counts(before.found).terminated, 0);

  const migrating = withDesired(
    ctx,
    ctx.desiredFrom([
      "--only",
      "reaper",
      "--github-api-url",
      gh.url,
      "--legacy-launch-template-ids",
      legacy,
    ]),
  );
  const after = await reapInstances(migrating);

  assert.equal(counts(after.found).templates, 1);
  assert.deepEqual(
    await ec2States(ctx.clients.ec2, [expired, orphan]),
    { [expired]: "terminated", [orphan]: "terminated" },
  );
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

Deno.test("reaper terminates an instance provision launched with CreateFleet and instance tags of its own, proven by its template", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  // As if EC2 kept only the request's instance tags: the template stamps none here.
  const template = await untaggingTemplate(ctx, "acme-widgets-ci-launch-template");
  const fleet = await ctx.clients.ec2.send(
    new CreateFleetCommand({
      Type: "instant",
      LaunchTemplateConfigs: [{
        LaunchTemplateSpecification: { LaunchTemplateId: template, Version: "$Default" },
        Overrides: [{ InstanceType: "t3.micro", SubnetId: ctx.network.subnetIds[0] }],
      }],
      TargetCapacitySpecification: {
        TotalTargetCapacity: 1,
        DefaultTargetCapacityType: "on-demand",
      },
      TagSpecifications: [{
        ResourceType: "instance",
        Tags: [{ Key: "AllowSelfTermination", Value: "true" }, { Key: "InitialRunId", Value: "7" }],
      }],
    }),
  );
  const [id] = fleet.Instances![0].InstanceIds!;
  await seed(ctx, id, "created", -1, "7");

  const outcome = await reapInstances(ctx);

  assert.equal(counts(outcome.found).terminated, 1, JSON.stringify(outcome));
  assert.equal((await ec2States(ctx.clients.ec2, [id]))[id], "terminated");
});
