/**
 * Kill points in the reaper's phases: refresh runs as a process behind the fault proxy
 * (test/support/fault_proxy.ts), which holds the k-th request of an operation unanswered (`stall`)
 * — after letting the one before it be done and its reply be lost, when the kill is "after" a
 * call; the test sees the held request and kills the process there (SIGKILL: no cleanup runs).
 * A second run, straight to moto, must then leave the invariants true: no expired instance alive,
 * no artifact left of a gone instance, no live or foreign instance (or its record) touched; and a
 * third run writes nothing.
 */
import assert from "node:assert/strict";
import { DeleteCommand, GetCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { LEASE_KEY } from "../lib/operations/lease.ts";
import { DescribeInstancesCommand, RunInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { BatchWriteCommand, QueryCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item, OWNER_TAG, timestamp } from "../lib/contract.ts";
import type { RunReport } from "../lib/report.ts";
import { reconcileTable } from "../lib/table.ts";
import { type TestContext, testContext } from "./support/aws.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { AWS_ENV, MOTO_URL } from "./support/moto.ts";
import { PERMISSIONS, REFRESH } from "./support/process.ts";

const TABLE = "acme-widgets-ci-table";
const AMI = "ami-1e749f67";
const MIN = 60_000;
const ARGS = ["--region", "us-east-1", "--repo", "acme/widgets", "--only", "reaper", "--json"];
/** Expired instances: 60 heartbeats and worker signals (3 delete requests), 30 records (2). */
const EXPIRED = 30;

interface Pool {
  expired: string[];
  live: string[];
  foreign: string[];
}

/** A table with expired and live pool instances, and records naming foreign instances. */
async function seedPool(ctx: TestContext): Promise<Pool> {
  await reconcileTable({ ...ctx, dryRun: false });
  const run = async (count: number, tagged: boolean) => {
    const out = await ctx.clients.ec2.send(
      new RunInstancesCommand({
        ImageId: AMI,
        MinCount: count,
        MaxCount: count,
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
  };
  const pool = {
    expired: await run(EXPIRED, true),
    live: await run(3, true),
    foreign: await run(2, false),
  };
  // The process runs on the real clock.
  const now = Date.now();
  const at = (minutes: number) => timestamp(new Date(now + minutes * MIN));
  const updated = new Date(now - 30 * MIN);
  const records = [
    ...pool.expired.map((id) => [id, "idle", at(-5)]),
    ...pool.live.map((id) => [id, "running", at(60)]),
    [pool.foreign[0], "terminated", at(-5)], // forged: "finish terminating this one"
    [pool.foreign[1], "idle", at(-5)], // forged: expired
  ];
  const items = records.flatMap(([id, state, threshold]) => [
    item("INSTANCE", id, updated, { state, threshold, runId: state === "running" ? "run-1" : "" }),
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
  return pool;
}

function spawnRefresh(endpoint: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMISSIONS, REFRESH, ...ARGS],
    env: {
      ...AWS_ENV,
      AWS_ENDPOINT_URL: endpoint,
      NO_COLOR: "1",
      GITHUB_ACTIONS: "",
      GITHUB_STEP_SUMMARY: "",
      GITHUB_TOKEN: "",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Runs refresh to its end against moto; returns its JSON report. */
async function runToEnd(): Promise<RunReport> {
  const out = await spawnRefresh(MOTO_URL).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, `${text}\n${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(text);
}

/** Items stored under an entity, by id. */
async function stored(ctx: TestContext, entity: string): Promise<Map<string, unknown>> {
  const out = await ctx.clients.ddb.send(
    new QueryCommand({
      TableName: TABLE,
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: { ":pk": `TYPE#${entity}` },
    }),
  );
  return new Map(out.Items!.map((i) => [i.identifier as string, i]));
}

async function states(ctx: TestContext, ids: string[]): Promise<Map<string, string>> {
  const out = await ctx.clients.ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }));
  return new Map(
    out.Reservations!.flatMap((r) => r.Instances!).map((i) => [i.InstanceId!, i.State!.Name!]),
  );
}

/**
 * Kills a reaper run at the `k`-th request of `operation` — `before` it reaches moto, or `after`
 * moto did it (its reply lost) — then checks that the next run converges.
 */
async function killAndRecover(operation: string, k: number, when: "before" | "after") {
  const ctx = await testContext(["--only", "reaper"], { env: {} });
  const pool = await seedPool(ctx);
  const liveBefore = await stored(ctx, "INSTANCE");
  await using proxy = startFaultProxy({ target: MOTO_URL });
  if (when === "after") proxy.inject(operation, "lose-reply", { after: k - 1 });
  proxy.inject(operation, "stall", { after: when === "after" ? 0 : k - 1 });

  const child = spawnRefresh(proxy.url);
  const deadline = Date.now() + 30_000;
  while (!proxy.requests.some((r) => r.fault === "stall")) {
    const exited = await Promise.race([
      child.status.then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), 10)),
    ]);
    if (exited || Date.now() > deadline) {
      const out = await child.output().catch(() => undefined);
      assert.fail(
        `refresh ${exited ? "ended" : "ran on"} before the kill point: ${proxy.describe()} ${
          out ? new TextDecoder().decode(out.stderr) : ""
        }`,
      );
    }
  }
  child.kill("SIGKILL");
  await child.output();
  assert.ok(
    proxy.requests.some((r) => r.operation === operation && r.fault === "stall"),
    proxy.describe(),
  );

  // The killed run's lease on the pool lapses by itself (--lease-sec, 80 s, plus 30 s): the
  // test takes that time away instead of waiting it out.
  const lease = await ctx.clients.ddb.send(
    new GetCommand({ TableName: TABLE, Key: LEASE_KEY, ConsistentRead: true }),
  );
  assert.ok(lease.Item, "the killed run held the lease");
  await ctx.clients.ddb.send(new DeleteCommand({ TableName: TABLE, Key: LEASE_KEY }));
  const second = await runToEnd();
  const third = await runToEnd();

  // No expired instance alive; no live or foreign instance touched.
  const ec2 = await states(ctx, [...pool.expired, ...pool.live, ...pool.foreign]);
  for (const id of pool.expired) assert.equal(ec2.get(id), "terminated", `expired ${id}`);
  for (const id of [...pool.live, ...pool.foreign]) assert.equal(ec2.get(id), "running", id);
  // No artifact left of a gone instance; live and foreign records exactly as they were.
  const kept = [...pool.live, ...pool.foreign].sort();
  for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
    assert.deepEqual([...(await stored(ctx, entity)).keys()].sort(), kept, entity);
  }
  const records = await stored(ctx, "INSTANCE");
  for (const id of kept) assert.deepEqual(records.get(id), liveBefore.get(id), id);
  // The next run writes nothing.
  assert.equal(third.writeCalls, 0, JSON.stringify(third.calls));
  assert.equal(second.results[0].status, "changed");
  return { second, proxy: proxy.describe() };
}

Deno.test("reaper killed after its first lock is written converges on the next run", async () => {
  await killAndRecover("DynamoDB.UpdateItem", 1, "after");
});

Deno.test("reaper killed before terminating converges on the next run", async () => {
  await killAndRecover("EC2.TerminateInstances", 1, "before");
});

Deno.test("reaper killed after terminating, before expunging, leaves no artifact after the next run", async () => {
  await killAndRecover("EC2.TerminateInstances", 1, "after");
});

Deno.test("reaper killed after deleting heartbeats and worker signals, before the records, leaves no artifact after the next run", async () => {
  // Requests 1-3 delete the 60 heartbeats and worker signals; the records come after.
  await killAndRecover("DynamoDB.BatchWriteItem", 3, "after");
});

Deno.test("reaper killed midway through deleting records leaves no artifact after the next run", async () => {
  await killAndRecover("DynamoDB.BatchWriteItem", 4, "after");
});
