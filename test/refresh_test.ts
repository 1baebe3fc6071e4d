import assert from "node:assert/strict";
import { CreateTableCommand, DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { DescribeInstancesCommand, RunInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { PutCommand, QueryCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { type DesiredState, type TaskName, TASKS } from "../lib/config.ts";
import { item, OWNER_TAG, timestamp } from "../lib/contract.ts";
import type { RunReport } from "../lib/report.ts";
import { runTasks, type Task } from "../lib/task.ts";
import { IMPLEMENTATIONS, main } from "../refresh.ts";
import { baseArgs, PINNED_RUNNER_ARGS, TEST_PAT, testContext } from "./support/aws.ts";
import { startFakeGithub } from "./support/github.ts";
import { AWS_ENV, resetMoto } from "./support/moto.ts";
import { runRefresh } from "./support/process.ts";

const ONLY = ["--only", "table,parameters"];

Deno.test("refresh exits 0 and prints one block per task when every task succeeds", async () => {
  const network = await resetMoto();
  const result = await runRefresh([...baseArgs(network), ...ONLY]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^table +changed +acme-widgets-ci-table: create, enable-ttl$/m);
  assert.match(result.stdout, /^ {2}create table acme-widgets-ci-table: PK\/SK, on-demand$/m);
  assert.match(result.stdout, /^parameters +changed +3 of 3 parameters written$/m);
  assert.match(result.stdout, /^ {2}write metadata idle_time_sec: 300 \(was missing\)$/m);
  assert.match(result.stdout, /^result: 2 changed; \d+ API calls, 5 writes$/m);
});

Deno.test("refresh makes zero write calls when run twice with the same desired state", async () => {
  const network = await resetMoto();
  const first = await runRefresh([...baseArgs(network), ...ONLY, "--json"]);
  assert.equal(first.code, 0, first.stderr);
  const firstReport: RunReport = JSON.parse(first.stdout);
  assert.equal(firstReport.writeCalls, 5);
  const second = await runRefresh([...baseArgs(network), ...ONLY, "--json"]);
  assert.equal(second.code, 0, second.stderr);
  const report: RunReport = JSON.parse(second.stdout);
  assert.equal(report.writeCalls, 0);
  assert.deepEqual(report.results.map((r) => [r.task, r.status, r.changes.length]), [
    ["table", "unchanged", 0],
    ["parameters", "unchanged", 0],
  ]);
  assert.deepEqual(report.calls, {
    "DynamoDB.DescribeTable": 1,
    "DynamoDB.DescribeTimeToLive": 1,
    "DynamoDB.GetItem": 3,
    "EC2.DescribeSecurityGroups": 1,
    "EC2.DescribeSubnets": 1,
  });
});

Deno.test("refresh prints one JSON document with --json", async () => {
  const network = await resetMoto();
  const result = await runRefresh([
    ...baseArgs(network),
    ...ONLY,
    "--json",
    "--idle-time-sec",
    "90",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const report: RunReport = JSON.parse(result.stdout);
  assert.equal(report.version, 1);
  assert.equal(report.exitCode, 0);
  assert.equal(report.dryRun, false);
  assert.equal(report.region, "us-east-1");
  assert.equal(report.table, "acme-widgets-ci-table");
  const parameters = report.results.find((r) => r.task === "parameters")!;
  assert.equal(parameters.status, "changed");
  assert.deepEqual(parameters.changes[0], {
    action: "write",
    target: "metadata idle_time_sec",
    detail: "90 (was missing)",
  });
  assert.deepEqual(parameters.found, {
    vpc: network.vpcId,
    subnets: { [network.subnetIds[0]]: "us-east-1a, 251 free IPs" },
    idle_time_sec: null,
    max_runtime_min: null,
    subnet_ids: null,
  });
  assert.equal(report.calls["DynamoDB.CreateTable"], 1);
});

Deno.test("refresh writes nothing under --dry-run and says what it would do", async () => {
  const network = await resetMoto();
  const result = await runRefresh([...baseArgs(network), ...ONLY, "--dry-run"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^dry run: nothing was written$/m);
  assert.match(result.stdout, /^ {2}would create table acme-widgets-ci-table/m);
  assert.match(result.stdout, /^ {2}would write metadata subnet_ids/m);
  assert.match(result.stdout, /; \d+ API calls, 0 writes$/m);
  const again = await runRefresh([...baseArgs(network), ...ONLY, "--json"]);
  assert.equal(JSON.parse(again.stdout).results[0].changes[0].action, "create");
});

Deno.test("refresh --dry-run on a new account reports every task's plan, writes nothing and exits 0", async () => {
  // A new account: no table, template, queues or parameters; every task runs (no --only).
  const network = await resetMoto();
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const args = [
    ...baseArgs(network),
    "--github-api-url",
    gh.url,
    ...PINNED_RUNNER_ARGS,
    "--warm-pool",
    "large=1",
    "--dry-run",
    "--json",
  ];
  const result = await runRefresh(args, { GITHUB_TOKEN: TEST_PAT });
  assert.equal(result.code, 0, result.stdout + result.stderr);
  const report: RunReport = JSON.parse(result.stdout);
  assert.equal(report.exitCode, 0);
  assert.equal(report.writeCalls, 0, JSON.stringify(report.calls));
  assert.deepEqual(report.results.map((r) => [r.task, r.status, r.error]), [
    ["table", "planned", undefined],
    ["launch-template", "planned", undefined],
    ["resource-pools", "planned", undefined],
    ["parameters", "planned", undefined],
    ["github-token", "planned", undefined],
    ["reaper", "unchanged", undefined],
    ["warm-pool", "planned", undefined],
  ]);
  const reaper = report.results.find((r) => r.task === "reaper")!;
  assert.equal(
    reaper.summary,
    "table acme-widgets-ci-table does not exist yet (the table task would create it): " +
      "nothing to reap (0 records, 0 instances alive)",
  );
  // The runner cleanup read the registrations, and GitHub saw no write either.
  assert.deepEqual(gh.requests.filter((r) => r.method !== "GET"), []);
  assert.ok(gh.requests.some((r) => r.path.endsWith("/actions/runners")));
  // The text report says it too.
  const text = await runRefresh(args.filter((a) => a !== "--json"), { GITHUB_TOKEN: TEST_PAT });
  assert.equal(text.code, 0, text.stdout + text.stderr);
  assert.match(text.stdout, /^dry run: nothing was written$/m);
  assert.match(text.stdout, /^reaper +ok +table acme-widgets-ci-table does not exist yet/m);
  assert.match(text.stdout, /; \d+ API calls, 0 writes$/m);
});

Deno.test("refresh exits 1 after running every task when one fails", async () => {
  const network = await resetMoto();
  const dynamo = new DynamoDBClient({ endpoint: AWS_ENV.AWS_ENDPOINT_URL, region: "us-east-1" });
  await dynamo.send(
    new CreateTableCommand({
      TableName: "acme-widgets-ci-table",
      KeySchema: [{ AttributeName: "id", KeyType: "HASH" }],
      AttributeDefinitions: [{ AttributeName: "id", AttributeType: "S" }],
      BillingMode: "PAY_PER_REQUEST",
    }),
  );
  dynamo.destroy();
  const result = await runRefresh([...baseArgs(network), ...ONLY, "--json"]);
  assert.equal(result.code, 1);
  const report: RunReport = JSON.parse(result.stdout);
  assert.equal(report.exitCode, 1);
  const [table, parameters] = report.results;
  assert.equal(table.status, "failed");
  assert.equal(
    table.error,
    "table acme-widgets-ci-table has the key schema id (hash); expected PK (hash), SK (range)",
  );
  // The parameters task still ran after the table task failed, and says why it failed.
  assert.equal(parameters.status, "failed");
  assert.match(parameters.error!, /ValidationException/);
});

Deno.test("refresh exits 2 on a bad desired state and prints every problem", async () => {
  const result = await runRefresh(["--repo", "acme", "--subnet-ids", "x", "--only", "parameters"], {
    AWS_REGION: "",
  });
  assert.equal(result.code, 2);
  assert.equal(result.stdout, "");
  assert.match(result.stderr, /region: required/);
  assert.match(result.stderr, /repo: "acme" is not owner\/name/);
  assert.match(result.stderr, /subnet-ids: "x" is not a subnet id/);
});

Deno.test("refresh reports an unexpected error in one redacted line and exits 1", async () => {
  const err: string[] = [];
  const code = await main(["--help"], { GITHUB_TOKEN: TEST_PAT }, {
    stdout: () => {
      throw new TypeError(`stdout closed while writing ${TEST_PAT}`);
    },
    stderr: (text) => err.push(text),
    readTextFile: () => "",
  });
  assert.equal(code, 1);
  assert.deepEqual(err, ["refresh: unexpected error: TypeError: stdout closed while writing ***"]);
});

Deno.test("refresh's tasks build a pool whose template-launched instances the reaper later reaps", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await testContext(
    // moto, unlike EC2, wants a size on a root volume mapping that overrides only its type.
    // The runner version and checksums are given: the only release read is the staleness check.
    [
      "--github-api-url",
      gh.url,
      "--root-volume-size",
      "30",
      ...PINNED_RUNNER_ARGS,
    ],
    { now: new Date().toISOString() },
  );
  const all = TASKS.map((t): [TaskName, Task<DesiredState>] => [t, IMPLEMENTATIONS[t]]);
  const built = await runTasks(all, ctx);
  assert.deepEqual(built.filter((r) => r.status === "failed"), []);

  // provision's part: launch from the template's default version; record one instance, not the other.
  const launched = await ctx.clients.ec2.send(
    new RunInstancesCommand({
      LaunchTemplate: {
        LaunchTemplateName: "acme-widgets-ci-launch-template",
        Version: "$Default",
      },
      SubnetId: ctx.network.subnetIds[0],
      MinCount: 2,
      MaxCount: 2,
    }),
  );
  const [recorded, orphan] = launched.Instances!.map((i) => i.InstanceId!);
  for (const instance of launched.Instances!) {
    assert.ok(
      instance.Tags?.some((t) => t.Key === OWNER_TAG && t.Value === "acme-widgets-ci-table"),
      `${instance.InstanceId} carries the ownership tag from the template`,
    );
  }
  const threshold = timestamp(new Date(ctx.now().getTime() + 5 * 60_000));
  for (
    const [entity, attributes] of [
      ["INSTANCE", { state: "idle", threshold, runId: "", resourceClass: "large" }],
      ["HEARTBEAT", { value: "PING" }],
      ["WS", { value: { state: "idle", runId: "" } }],
    ] as const
  ) {
    await ctx.clients.ddb.send(
      new PutCommand({
        TableName: "acme-widgets-ci-table",
        Item: item(entity, recorded, ctx.now(), attributes),
      }),
    );
  }
  gh.runners.push({ id: 7, name: `${recorded}-large`, status: "offline", busy: false });

  const reap = () => runTasks([["reaper", IMPLEMENTATIONS.reaper]], ctx);
  const early = (await reap())[0];
  assert.equal(early.status, "unchanged", "nothing expired, the orphan is within its grace");

  ctx.setNow(new Date(ctx.now().getTime() + 20 * 60_000));
  const late = (await reap())[0];
  assert.equal(late.status, "changed", late.error);
  assert.deepEqual(
    late.changes.map((c) => [c.action, c.target]).sort(),
    [
      ["delete-runner", `runner ${recorded}-large (#7)`],
      ["terminate", `instance ${orphan}`],
      ["terminate", `instance ${recorded}`],
    ].sort(),
  );
  const states = await ctx.clients.ec2.send(
    new DescribeInstancesCommand({ InstanceIds: [recorded, orphan] }),
  );
  assert.deepEqual(
    states.Reservations!.flatMap((r) => r.Instances!).map((i) => i.State?.Name),
    ["terminated", "terminated"],
  );
  const left = await ctx.clients.ddb.send(
    new QueryCommand({
      TableName: "acme-widgets-ci-table",
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: { ":pk": "TYPE#INSTANCE" },
    }),
  );
  assert.equal(left.Count, 0);
  assert.deepEqual(gh.runners, []);

  ctx.counter.reset();
  const again = await runTasks(all, ctx);
  assert.deepEqual(again.map((r) => r.status), TASKS.map(() => "unchanged"));
  assert.equal(ctx.counter.writes(), 0);
});
