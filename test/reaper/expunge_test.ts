/**
 * The reaper's deletions (lib/reaper/expunge.ts): backoff on unprocessed items, artifacts before
 * records, failed requests, stray artifacts (old ones, and at once those of instances EC2 reports
 * terminated: lib/reaper/ended.ts).
 */
import assert from "node:assert/strict";
import { TerminateInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item } from "../../lib/contract.ts";
import { reapInstances } from "../../lib/reaper.ts";
import { startFakeGithub } from "../support/github.ts";
import { TEST_PAT } from "../support/aws.ts";
import {
  counts,
  launch,
  MIN,
  seed,
  setup,
  sorted,
  stored,
  TABLE,
  watchBatchWrites,
} from "./harness.ts";

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

Deno.test("reaper deletes a reaped instance's late heartbeat on the next run, without waiting for the grace; the run after makes no write", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--orphan-grace-min", "15"]);
  const [id] = await launch(ctx, 1);
  await seed(ctx, id, "idle", -1);
  const reaped = await reapInstances(ctx);
  assert.equal(counts(reaped.found).terminated, 1);
  assert.deepEqual(await stored(ctx, "HEARTBEAT"), []);
  // The instance's last heartbeat lands a second after the reaper deleted its items.
  await ctx.clients.ddb.send(
    new PutCommand({
      TableName: TABLE,
      Item: item("HEARTBEAT", id, new Date(ctx.now().getTime() + 1000), { value: "PING" }),
    }),
  );
  ctx.setNow(new Date(ctx.now().getTime() + 60_000)); // the next run, a minute later

  const next = await reapInstances(ctx);

  assert.equal(counts(next.found).strays, 1);
  assert.deepEqual(next.changes.map((c) => `${c.action} ${c.target}`), [`delete heartbeat ${id}`]);
  assert.deepEqual(await stored(ctx, "HEARTBEAT"), []);
  ctx.counter.reset();
  await reapInstances(ctx);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("reaper deletes a young heartbeat without a record when EC2 reports its instance terminated, not when EC2 does not know it", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh, ["--orphan-grace-min", "15"]);
  // An id EC2 does not know: missing from a listing is no proof of death (it may be too young).
  const unknown = "i-0bbbbbbbbbbbbbbbb";
  const [terminated] = await launch(ctx, 1, false);
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [terminated] }));
  for (const id of [unknown, terminated]) {
    await ctx.clients.ddb.send(
      new PutCommand({
        TableName: TABLE,
        Item: item("HEARTBEAT", id, ctx.now(), { value: "PING" }),
      }),
    );
  }

  const outcome = await reapInstances(ctx);

  assert.deepEqual(outcome.changes.map((c) => `${c.action} ${c.target}`), [
    `delete heartbeat ${terminated}`,
  ]);
  assert.deepEqual(await stored(ctx, "HEARTBEAT"), [unknown]);
});
