/** A targeted run's look-up of the instances it reaps: state and proof only (lib/reaper/proof.ts). */
import assert from "node:assert/strict";
import { TerminateInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { readProofs, STATUS_IDS } from "../../lib/reaper/proof.ts";
import { FILTER_VALUES } from "../../lib/reaper/reads.ts";
import { startFakeGithub } from "../support/github.ts";
import { TEST_PAT } from "../support/aws.ts";
import {
  filterValues,
  launch,
  launchForeignPool,
  launchFrom,
  setup,
  sorted,
  TABLE,
  untaggingTemplate,
  watchEc2,
} from "./harness.ts";

Deno.test("readProofs proves by tag or by template, and asks the state of the unproven ones only", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const template = await untaggingTemplate(ctx, "acme-widgets-ci-legacy");
  const [templated] = await launchFrom(ctx, template, 1);
  const [tagged] = await launch(ctx, 1);
  const [untagged, ended] = await launch(ctx, 2, false);
  const other = await launchForeignPool(ctx);
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [ended] }));
  const calls = watchEc2(ctx);
  const ids = [tagged, templated, untagged, other, ended];

  const pool = await readProofs(ctx.clients.ec2, TABLE, {
    templateIds: new Set([template]),
    templatesByName: new Map(),
  }, ids);

  assert.deepEqual(
    Object.fromEntries([...pool.alive.values()].map((i) => [i.id, i.proof])),
    { [tagged]: "tag", [templated]: "template" },
  );
  assert.deepEqual(sorted([...pool.foreign.keys()]), sorted([untagged, other]));
  assert.deepEqual([...pool.ended], [ended]);
  assert.deepEqual(sorted([...pool.checked!]), sorted(ids));
  assert.deepEqual(calls.map((c) => c.name), ["DescribeTags", "DescribeInstanceStatus"]);
  assert.deepEqual(
    sorted(calls[1].input.InstanceIds as string[]),
    sorted([untagged, other, ended]),
    "the state of proven instances is not asked",
  );
});

Deno.test("readProofs answers for a batch holding an id EC2 does not know, and asks nothing for a wildcard", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [tagged] = await launch(ctx, 1);
  const unknown = "i-0aaaaaaaaaaaaaaaa";
  const calls = watchEc2(ctx);

  const pool = await readProofs(ctx.clients.ec2, TABLE, {
    templateIds: new Set(),
    templatesByName: new Map(),
  }, [tagged, unknown, "i-*"]);

  assert.deepEqual([...pool.alive.keys()], [tagged]);
  assert.equal(pool.foreign.size + pool.ended.size, 0);
  assert.ok(pool.checked!.has("i-*") && pool.checked!.has(unknown));
  // The status call fails on the unknown id; the batch is described by id instead.
  assert.deepEqual(calls.map((c) => c.name), [
    "DescribeTags",
    "DescribeInstanceStatus",
    "DescribeInstances",
  ]);
  assert.deepEqual(calls[2].input.Filters, [{ Name: "instance-id", Values: [unknown] }]);
  assert.ok(!JSON.stringify(calls).includes("i-*"), "the wildcard id went to EC2");
});

Deno.test("readProofs stays within EC2's limits per call", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  // Untagged: no proof, so their states are asked too.
  const ids = await launch(ctx, 250, false);
  const calls = watchEc2(ctx);

  const pool = await readProofs(ctx.clients.ec2, TABLE, {
    templateIds: new Set(),
    templatesByName: new Map(),
  }, ids);

  assert.equal(pool.foreign.size, 250);
  const statuses = calls.filter((c) => c.name === "DescribeInstanceStatus");
  const tags = calls.filter((c) => c.name === "DescribeTags");
  assert.equal(statuses.length, 3);
  for (const c of statuses) {
    assert.ok((c.input.InstanceIds as string[]).length <= STATUS_IDS);
  }
  assert.equal(tags.length, 2);
  for (const c of tags) assert.ok(filterValues(c.input) <= FILTER_VALUES);
});
