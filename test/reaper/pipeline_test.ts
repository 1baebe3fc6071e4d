/**
 * The reaper's pipeline (lib/reaper/pipeline.ts): deletions start while locks are still in
 * flight, throttled writes are retried rather than failed, and the run makes exactly the
 * requests of the phases one after another.
 */
import assert from "node:assert/strict";
import { PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item } from "../../lib/contract.ts";
import { reapInstances } from "../../lib/reaper.ts";
import { TEST_PAT } from "../support/aws.ts";
import { startFakeGithub } from "../support/github.ts";
import {
  counts,
  launch,
  MIN,
  putRecords,
  seed,
  setup,
  stored,
  TABLE,
  withConcurrency,
} from "./harness.ts";

/** Well-formed instance ids EC2 does not know. */
const unknownIds = (n: number, from = 0) =>
  Array.from({ length: n }, (_, i) => `i-0${(from + i).toString(16).padStart(16, "0")}`);

Deno.test("reaper deletes the items of instances known gone while other locks are still in flight", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = withConcurrency(await setup(gh), 2);
  const [alive] = await launch(ctx, 1);
  await seed(ctx, alive, "idle", -1);
  // 13 expired records of instances EC2 does not know: once locked, 26 items to delete.
  const gone = unknownIds(13);
  await putRecords(ctx, gone, "idle");
  const events: string[] = [];
  let batchStarted!: () => void;
  const started = new Promise<void>((resolve) => batchStarted = resolve);
  // The live instance's lock is held until a delete request starts (3 s at most): phases one
  // after another would wait for that lock before any deletion.
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === "BatchWriteItemCommand") {
        events.push("delete request");
        batchStarted();
      }
      const key = (args.input as { Key?: { SK?: string } }).Key?.SK;
      if (context.commandName === "UpdateItemCommand" && key === `ID#${alive}`) {
        await Promise.race([started, new Promise((resolve) => setTimeout(resolve, 3000))]);
        const out = await next(args);
        events.push("live instance locked");
        return out;
      }
      return next(args);
    },
    { step: "initialize", name: "holdLiveLock" },
  );

  const outcome = await reapInstances(ctx);

  assert.equal(events[0], "delete request", events.join(", "));
  const found = counts(outcome.found);
  assert.equal(found.locked, 14);
  assert.equal(found.terminated, 1);
  assert.equal(found.expunged, 14);
  for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
    assert.deepEqual(await stored(ctx, entity), [], entity);
  }
});

/** Fails the first `n` requests of a DynamoDB operation with a throttling error, as DynamoDB does. */
function throttle(
  ctx: Awaited<ReturnType<typeof setup>>,
  command: string,
  n: number,
  name: string,
) {
  let left = n;
  ctx.clients.ddb.middlewareStack.add(
    (next, context) => (args) => {
      if (context.commandName === command && left > 0) {
        left--;
        throw Object.assign(new Error("Rate of requests exceeds the allowed throughput."), {
          name,
          $metadata: { httpStatusCode: 400 },
        });
      }
      return next(args);
    },
    { step: "initialize", name: `throttle${command}` },
  );
}

Deno.test("reaper retries a lock DynamoDB throttles after a backoff, and reaps the instance", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [id] = await launch(ctx, 1);
  await seed(ctx, id, "claimed", -1, "run-1");
  throttle(ctx, "UpdateItemCommand", 2, "ProvisionedThroughputExceededException");
  const waits: number[] = [];

  const outcome = await reapInstances(ctx, {
    sleep: (ms) => {
      waits.push(ms);
      return Promise.resolve();
    },
  });

  const found = counts(outcome.found);
  assert.equal(found.locked, 1);
  assert.equal(found.terminated, 1);
  assert.equal(found.expunged, 1);
  assert.equal(waits.length, 2);
  assert.ok(waits[0] >= 50 && waits[0] <= 150, `${waits}`);
  assert.ok(waits[1] >= 100 && waits[1] <= 300, `${waits}`);
});

Deno.test("reaper retries a delete request DynamoDB throttles instead of failing it", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 2);
  for (const id of ids) await seed(ctx, id, "idle", -1);
  throttle(ctx, "BatchWriteItemCommand", 1, "ThrottlingException");

  const outcome = await reapInstances(ctx, { sleep: () => Promise.resolve() });

  assert.equal(counts(outcome.found).expunged, 2);
  assert.deepEqual(outcome.warnings, []);
  for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
    assert.deepEqual(await stored(ctx, entity), [], entity);
  }
});

Deno.test("reaper's pipeline makes exactly the requests of the phases one after another", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const expired = await launch(ctx, 30);
  for (const id of expired) await seed(ctx, id, "idle", -1);
  const gone = unknownIds(4, 100);
  await putRecords(ctx, gone, "terminated");
  // Two stray heartbeats, written long ago by instances whose records are gone.
  for (const id of unknownIds(2, 200)) {
    await ctx.clients.ddb.send(
      new PutCommand({
        TableName: TABLE,
        Item: item("HEARTBEAT", id, new Date(ctx.now().getTime() - 60 * MIN), { value: "PING" }),
      }),
    );
  }
  ctx.counter.reset();

  const outcome = await reapInstances(ctx);

  const found = counts(outcome.found);
  assert.equal(found.terminated, 30);
  assert.equal(found.expunged, 34);
  assert.equal(found.strays, 2);
  const aws = Object.entries(ctx.counter.toJSON()).filter(([op]) => !op.startsWith("GitHub."));
  assert.deepEqual(Object.fromEntries(aws), {
    "DynamoDB.Query": 3,
    "DynamoDB.UpdateItem": 30,
    // 60 + 8 + 2 heartbeats and worker signals: 3 requests; then 34 records: 2.
    "DynamoDB.BatchWriteItem": 5,
    "EC2.DescribeInstances": 2, // the pool by tag, the 4 unknown ids
    "EC2.DescribeLaunchTemplates": 1,
    "EC2.TerminateInstances": 1,
  });
});
