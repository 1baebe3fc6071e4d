/**
 * The reaper's terminations (lib/reaper/terminate.ts): ids EC2 names in an error, the proof of
 * ownership, refused and unknown instances.
 */
import assert from "node:assert/strict";
import { TerminateInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { reapInstances } from "../../lib/reaper.ts";
import { terminateOwned } from "../../lib/reaper/terminate.ts";
import { startFakeGithub } from "../support/github.ts";
import { TEST_PAT } from "../support/aws.ts";
import {
  counts,
  ec2RunProtected,
  ec2States,
  launch,
  record,
  seed,
  setup,
  sorted,
  stored,
  watchTerminations,
} from "./harness.ts";

Deno.test("reaper retries a batch without the ids EC2 does not know or may not terminate", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const ids = await launch(ctx, 3);
  const [protectedId] = await ec2RunProtected(ctx);
  // Proven the pool's when read, unknown to EC2 when terminated.
  const unknown = ["i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"];
  const terminations = watchTerminations(ctx);

  // The protected one first: moto terminates the instances before it in a call and then fails
  // the call, where EC2 checks every instance first and terminates none.
  const result = await terminateOwned(
    ctx.clients.ec2,
    [protectedId, ...ids, ...unknown].map((id) => ({ id, proof: "tag" as const })),
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

Deno.test("reaper counts an instance that had ended before its termination as gone, not terminated", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [alive, ended] = await launch(ctx, 2);
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [ended] }));

  const result = await terminateOwned(
    ctx.clients.ec2,
    [alive, ended].map((id) => ({ id, proof: "tag" as const })),
    ctx.log,
  );

  assert.deepEqual(result.terminated, [alive]);
  assert.deepEqual(result.notFound, [ended]);
});
