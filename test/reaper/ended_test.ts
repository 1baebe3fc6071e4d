/** EC2's word that an instance is dead (lib/reaper/ended.ts). */
import assert from "node:assert/strict";
import { TerminateInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { readEnded } from "../../lib/reaper/ended.ts";
import { startFakeGithub } from "../support/github.ts";
import { TEST_PAT } from "../support/aws.ts";
import { launch, setup, TABLE } from "./harness.ts";

Deno.test("readEnded returns the instances EC2 reports terminated, with their proof, and asks nothing for no id", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const ctx = await setup(gh);
  const [ours, running] = await launch(ctx, 2);
  const [untagged] = await launch(ctx, 1, false);
  await ctx.clients.ec2.send(new TerminateInstancesCommand({ InstanceIds: [ours, untagged] }));
  const unknown = "i-0aaaaaaaaaaaaaaaa";

  const ended = await readEnded(
    ctx.clients.ec2,
    [ours, running, untagged, unknown, ours],
    TABLE,
    new Set(),
  );

  assert.deepEqual(
    [...ended.values()].sort((a, b) => a.id.localeCompare(b.id)),
    [{ id: ours, proof: "tag" }, { id: untagged, proof: undefined }].sort((a, b) =>
      a.id.localeCompare(b.id)
    ),
  );
  assert.equal(ctx.counter.counts.get("EC2.DescribeInstances"), 1);
  ctx.counter.reset();
  assert.deepEqual(await readEnded(ctx.clients.ec2, [], TABLE, new Set()), new Map());
  assert.equal(ctx.counter.counts.get("EC2.DescribeInstances"), undefined);
});
