/**
 * The reaper's reads (lib/reaper/reads.ts): every page, DescribeInstances' filter limit, and
 * ownership proven by EC2's template tag (the pool's templates, legacy ones, CreateFleet).
 */
import assert from "node:assert/strict";
import { CreateFleetCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { reapInstances } from "../../lib/reaper.ts";
import { startFakeGithub } from "../support/github.ts";
import { TEST_PAT, withDesired } from "../support/aws.ts";
import {
  counts,
  ec2States,
  launch,
  launchFrom,
  putRecords,
  seed,
  setup,
  sorted,
  stored,
  untaggingTemplate,
  watchTerminations,
} from "./harness.ts";

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
