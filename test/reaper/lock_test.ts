/**
 * The reaper's lock (lib/reaper/lock.ts): lost races, DESIGN.md's fields and TTL, a lost reply.
 */
import assert from "node:assert/strict";
import { UpdateCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { timestamp } from "../../lib/contract.ts";
import { reapInstances } from "../../lib/reaper.ts";
import { startFakeGithub } from "../support/github.ts";
import { contextOn, TEST_PAT } from "../support/aws.ts";
import { startFaultProxy } from "../support/fault_proxy.ts";
import { MOTO_URL } from "../support/moto.ts";
import {
  at,
  counts,
  ec2States,
  launch,
  MIN,
  record,
  seed,
  setup,
  stored,
  TABLE,
  watchTerminations,
  withConcurrency,
} from "./harness.ts";

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
