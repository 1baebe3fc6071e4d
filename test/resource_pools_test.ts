import assert from "node:assert/strict";
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ListQueuesCommand,
  ListQueueTagsCommand,
  SetQueueAttributesCommand,
} from "npm:@aws-sdk/client-sqs@3.1169.0";
import { PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { ConfigError, parseDesiredState } from "../lib/config.ts";
import { queueName, queueNamePrefix, sha256 } from "../lib/contract.ts";
import { readMetadata } from "../lib/metadata.ts";
import {
  DEFAULT_RESOURCE_CLASSES,
  listQueues,
  reconcileResourcePools,
} from "../lib/resource_pools.ts";
import { reconcileTable } from "../lib/table.ts";
import { main } from "../refresh.ts";
import {
  BASE_ARGS,
  desiredFrom,
  type TestContext,
  testContext,
  withDesired,
} from "./support/aws.ts";
import { AWS_ENV } from "./support/moto.ts";
import { checkRefused, type InvalidInput } from "./support/refused.ts";

const TABLE = "acme-widgets-ci-table";
const TWO = [
  "--resource-class-config",
  '{"large":{"cpu":2,"mmem":4096},"xlarge":{"cpu":4,"mmem":8192}}',
];
const classes = (json: Record<string, [number, number]>) => [
  "--resource-class-config",
  JSON.stringify(
    Object.fromEntries(Object.entries(json).map(([k, [cpu, mmem]]) => [k, { cpu, mmem }])),
  ),
];

/** A context on an empty moto account with the table created and the counter at zero. */
async function setup(args: string[] = TWO): Promise<TestContext> {
  const ctx = await testContext(args);
  await reconcileTable(withDesired(ctx, ctx.desiredFrom([])));
  ctx.counter.reset();
  return ctx;
}

/** Runs the task with other flags on the same account, clock and counter (reset first). */
function rerun(ctx: TestContext, args: string[]) {
  ctx.counter.reset();
  return reconcileResourcePools(withDesired(ctx, ctx.desiredFrom(args)));
}

function record(ctx: TestContext) {
  return readMetadata(ctx.clients.ddb, TABLE, "resource_class_config");
}

async function urlOf(ctx: TestContext, name: string): Promise<string> {
  return (await ctx.clients.sqs.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl!;
}

async function allQueueNames(ctx: TestContext): Promise<string[]> {
  const out = await ctx.clients.sqs.send(new ListQueuesCommand({}));
  return (out.QueueUrls ?? []).map((u) => u.slice(u.lastIndexOf("/") + 1)).sort();
}

async function attributesOf(ctx: TestContext, name: string) {
  const out = await ctx.clients.sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: await urlOf(ctx, name), AttributeNames: ["All"] }),
  );
  return out.Attributes ?? {};
}

async function tagsOf(ctx: TestContext, name: string) {
  const out = await ctx.clients.sqs.send(
    new ListQueueTagsCommand({ QueueUrl: await urlOf(ctx, name) }),
  );
  return out.Tags ?? {};
}

function writes(ctx: TestContext): Record<string, number> {
  return Object.fromEntries(
    Object.entries(ctx.counter.toJSON()).filter(([op]) =>
      /^(SQS\.(Create|Set|Tag|Delete)|DynamoDB\.Put)/.test(op)
    ),
  );
}

Deno.test("resource-pools creates every default class's queue and records it when none exist", async () => {
  const ctx = await setup([]);
  const outcome = await reconcileResourcePools(ctx);
  assert.deepEqual(writes(ctx), { "SQS.CreateQueue": 7, "DynamoDB.PutItem": 1 });
  assert.equal(ctx.counter.total((op) => op === "SQS.ListQueues"), 1);
  const names = Object.keys(DEFAULT_RESOURCE_CLASSES).map((c) => `acme-widgets-${c}-ci-pool`);
  assert.deepEqual(await allQueueNames(ctx), [...names].sort());
  assert.equal(outcome.summary, "7 queues created, record written");
  const expected: Record<string, unknown> = {};
  for (const [cls, { cpu, mmem }] of Object.entries(DEFAULT_RESOURCE_CLASSES)) {
    expected[cls] = { cpu, mmem, queueUrl: await urlOf(ctx, `acme-widgets-${cls}-ci-pool`) };
  }
  assert.deepEqual(await record(ctx), expected);
  const attrs = await attributesOf(ctx, "acme-widgets-large-ci-pool");
  assert.equal(attrs.VisibilityTimeout, "30");
  assert.equal(attrs.MessageRetentionPeriod, "345600");
  assert.equal(attrs.SqsManagedSseEnabled, "true");
  assert.equal(attrs.FifoQueue, undefined);
  assert.deepEqual(await tagsOf(ctx, "acme-widgets-large-ci-pool"), { "refresh:pool": TABLE });
});

Deno.test("resource-pools makes no write call on a second run with the same desired state", async () => {
  const ctx = await setup([]);
  await reconcileResourcePools(ctx);
  const outcome = await rerun(ctx, []);
  assert.deepEqual(outcome.changes, []);
  assert.deepEqual(outcome.warnings, []);
  assert.equal(outcome.summary, "7 queues and the record match");
  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(ctx.counter.toJSON(), {
    "DynamoDB.GetItem": 1,
    "SQS.GetQueueAttributes": 7,
    "SQS.ListQueueTags": 7,
    "SQS.ListQueues": 1,
  });
});

Deno.test("resource-pools creates only the new queue and rewrites the record when a class is added", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  const outcome = await rerun(ctx, [
    "--resource-class-config",
    '{"large":{"cpu":2,"mmem":4096},"xlarge":{"cpu":4,"mmem":8192},"gpu":{"cpu":8,"mmem":61440}}',
  ]);
  assert.deepEqual(outcome.changes.map((c) => `${c.action} ${c.target}`), [
    "create queue acme-widgets-gpu-ci-pool",
    "write metadata resource_class_config",
  ]);
  assert.deepEqual(writes(ctx), { "SQS.CreateQueue": 1, "DynamoDB.PutItem": 1 });
  const stored = await record(ctx) as Record<string, unknown>;
  assert.deepEqual(stored.gpu, {
    cpu: 8,
    mmem: 61440,
    queueUrl: await urlOf(ctx, "acme-widgets-gpu-ci-pool"),
  });
  assert.deepEqual(Object.keys(stored).sort(), ["gpu", "large", "xlarge"]);
});

Deno.test("resource-pools sets only the attributes changed out of band", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  await ctx.clients.sqs.send(
    new SetQueueAttributesCommand({
      QueueUrl: await urlOf(ctx, "acme-widgets-xlarge-ci-pool"),
      Attributes: { VisibilityTimeout: "900", SqsManagedSseEnabled: "false" },
    }),
  );
  const outcome = await rerun(ctx, TWO);
  assert.deepEqual(outcome.changes, [{
    action: "set-attributes",
    target: "queue acme-widgets-xlarge-ci-pool",
    detail: "VisibilityTimeout 900 -> 30, SqsManagedSseEnabled false -> true",
  }]);
  assert.deepEqual(writes(ctx), { "SQS.SetQueueAttributes": 1 });
  const attrs = await attributesOf(ctx, "acme-widgets-xlarge-ci-pool");
  assert.equal(attrs.VisibilityTimeout, "30");
  assert.equal(attrs.SqsManagedSseEnabled, "true");
  assert.equal((await rerun(ctx, TWO)).changes.length, 0);
});

Deno.test("resource-pools applies changed desired attributes to existing queues", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  const outcome = await rerun(ctx, [...TWO, "--queue-visibility-timeout", "120"]);
  assert.deepEqual(outcome.changes.map((c) => c.detail), [
    "VisibilityTimeout 30 -> 120",
    "VisibilityTimeout 30 -> 120",
  ]);
  assert.deepEqual(writes(ctx), { "SQS.SetQueueAttributes": 2 });
  assert.equal((await attributesOf(ctx, "acme-widgets-large-ci-pool")).VisibilityTimeout, "120");
});

Deno.test("resource-pools leaves a queue encrypted with a KMS key as it is", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  await ctx.clients.sqs.send(
    new SetQueueAttributesCommand({
      QueueUrl: await urlOf(ctx, "acme-widgets-large-ci-pool"),
      Attributes: { KmsMasterKeyId: "alias/runners", SqsManagedSseEnabled: "false" },
    }),
  );
  const outcome = await rerun(ctx, TWO);
  assert.deepEqual(outcome.changes, []);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("resource-pools keeps a removed class's queue and record entry without --prune", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  const before = await record(ctx);
  const outcome = await rerun(ctx, classes({ large: [2, 4096] }));
  assert.deepEqual(outcome.changes, []);
  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(outcome.warnings, [
    'resource class "xlarge" was removed from the desired state; its queue acme-widgets-xlarge-ci-pool is kept (delete it with --prune)',
  ]);
  assert.deepEqual(outcome.found.removed, [
    { queue: "acme-widgets-xlarge-ci-pool", class: "xlarge", owned: true },
  ]);
  assert.deepEqual(await allQueueNames(ctx), [
    "acme-widgets-large-ci-pool",
    "acme-widgets-xlarge-ci-pool",
  ]);
  assert.deepEqual(await record(ctx), before);
});

Deno.test("resource-pools deletes a removed class's queue and record entry with --prune", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  const outcome = await rerun(ctx, [...classes({ large: [2, 4096] }), "--prune"]);
  assert.deepEqual(outcome.changes.map((c) => `${c.action} ${c.target}`), [
    "delete queue acme-widgets-xlarge-ci-pool",
    "write metadata resource_class_config",
  ]);
  assert.deepEqual(outcome.warnings, []);
  assert.deepEqual(writes(ctx), { "SQS.DeleteQueue": 1, "DynamoDB.PutItem": 1 });
  assert.deepEqual(await allQueueNames(ctx), ["acme-widgets-large-ci-pool"]);
  assert.deepEqual(Object.keys(await record(ctx) as object), ["large"]);
  assert.equal((await rerun(ctx, [...classes({ large: [2, 4096] }), "--prune"])).changes.length, 0);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("resource-pools does not delete an untagged queue of a removed class with --prune", async () => {
  const ctx = await setup(classes({ large: [2, 4096] }));
  const { sqs } = ctx.clients;
  const legacy = await sqs.send(new CreateQueueCommand({ QueueName: "acme-widgets-old-ci-pool" }));
  await ctx.clients.ddb.send(
    new PutCommand({
      TableName: TABLE,
      Item: {
        PK: "TYPE#METADATA",
        SK: "ID#resource_class_config",
        value: { old: { cpu: 1, mmem: 1024, queueUrl: legacy.QueueUrl } },
      },
    }),
  );
  const outcome = await rerun(ctx, [...classes({ large: [2, 4096] }), "--prune"]);
  assert.deepEqual(outcome.warnings, [
    'resource class "old" was removed from the desired state; its queue acme-widgets-old-ci-pool is not deleted: it does not carry the tag refresh:pool=acme-widgets-ci-table, so it may not be this pool\'s',
  ]);
  assert.equal(ctx.counter.total((op) => op === "SQS.DeleteQueue"), 0);
  assert.deepEqual(await allQueueNames(ctx), [
    "acme-widgets-large-ci-pool",
    "acme-widgets-old-ci-pool",
  ]);
  assert.deepEqual(Object.keys(await record(ctx) as object), ["large"]);
});

Deno.test("resource-pools keeps a removed class's entry whose queue is gone until --prune drops it", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  const { sqs } = ctx.clients;
  await sqs.send(
    new DeleteQueueCommand({ QueueUrl: await urlOf(ctx, "acme-widgets-xlarge-ci-pool") }),
  );
  const kept = await rerun(ctx, classes({ large: [2, 4096] }));
  assert.deepEqual(kept.warnings, [
    'resource class "xlarge" was removed from the desired state and its queue is gone; its record entry is kept (drop it with --prune)',
  ]);
  assert.equal(ctx.counter.writes(), 0);
  const pruned = await rerun(ctx, [...classes({ large: [2, 4096] }), "--prune"]);
  assert.deepEqual(pruned.changes.map((c) => `${c.action} ${c.target}`), [
    "write metadata resource_class_config",
  ]);
  assert.deepEqual(pruned.warnings, []);
  assert.deepEqual(Object.keys(await record(ctx) as object), ["large"]);
});

Deno.test("resource-pools reports and with --prune deletes a tagged queue that no class or record names", async () => {
  const ctx = await setup(classes({ large: [2, 4096] }));
  await ctx.clients.sqs.send(
    new CreateQueueCommand({
      QueueName: "acme-widgets-stray-ci-pool",
      tags: { "refresh:pool": TABLE },
    }),
  );
  const kept = await reconcileResourcePools(ctx);
  assert.deepEqual(kept.warnings, [
    "queue acme-widgets-stray-ci-pool is tagged for this pool but no resource class maps to it; it is kept (delete it with --prune)",
  ]);
  const pruned = await rerun(ctx, [...classes({ large: [2, 4096] }), "--prune"]);
  assert.deepEqual(pruned.changes, [{
    action: "delete",
    target: "queue acme-widgets-stray-ci-pool",
    detail: "no class maps to it",
  }]);
  assert.deepEqual(await allQueueNames(ctx), ["acme-widgets-large-ci-pool"]);
});

Deno.test("resource-pools recreates a queue deleted out of band and updates the record's URL", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  const { sqs } = ctx.clients;
  await sqs.send(
    new DeleteQueueCommand({ QueueUrl: await urlOf(ctx, "acme-widgets-large-ci-pool") }),
  );
  // Make the stored URL stale as well, as when the queue came back under another endpoint.
  const stale = await record(ctx) as Record<string, { queueUrl: string }>;
  stale.large.queueUrl = "https://sqs.us-east-1.amazonaws.com/000000000000/gone";
  await ctx.clients.ddb.send(
    new PutCommand({
      TableName: TABLE,
      Item: { PK: "TYPE#METADATA", SK: "ID#resource_class_config", value: stale },
    }),
  );
  const outcome = await rerun(ctx, TWO);
  assert.deepEqual(outcome.changes.map((c) => `${c.action} ${c.target}`), [
    "create queue acme-widgets-large-ci-pool",
    "write metadata resource_class_config",
  ]);
  assert.deepEqual(writes(ctx), { "SQS.CreateQueue": 1, "DynamoDB.PutItem": 1 });
  const url = await urlOf(ctx, "acme-widgets-large-ci-pool");
  assert.deepEqual((await record(ctx) as typeof stale).large.queueUrl, url);
  assert.deepEqual(await tagsOf(ctx, "acme-widgets-large-ci-pool"), { "refresh:pool": TABLE });
});

Deno.test("resource-pools names queues of classes with dots by SQS's alphabet, distinct per class", async () => {
  const args = classes({ "c5.large": [2, 4096], "c5-large": [2, 4096], "C5_Large": [2, 4096] });
  const ctx = await setup(args);
  await reconcileResourcePools(ctx);
  const dotted = `acme-widgets-c5-large-${sha256("c5.large").slice(0, 8)}-ci-pool`;
  assert.deepEqual(ctx.desired.pools.queueNames, {
    "c5.large": dotted,
    "c5-large": "acme-widgets-c5-large-ci-pool",
    "C5_Large": "acme-widgets-C5_Large-ci-pool",
  });
  assert.deepEqual(await allQueueNames(ctx), [
    "acme-widgets-C5_Large-ci-pool",
    dotted,
    "acme-widgets-c5-large-ci-pool",
  ]);
  const stored = await record(ctx) as Record<string, { queueUrl: string }>;
  assert.equal(stored["c5.large"].queueUrl, await urlOf(ctx, dotted));
  assert.equal((await rerun(ctx, args)).changes.length, 0);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("resource-pools finds its queues again when a long repository name truncates their names", async () => {
  const repo = `acme/${"w".repeat(70)}`;
  const args = [
    "--repo",
    repo,
    "--table",
    TABLE,
    ...classes({ large: [2, 4096], "a-class-name-of-forty-characters-exactly": [1, 1] }),
  ];
  const ctx = await setup(args);
  await reconcileResourcePools(ctx);
  const names = await allQueueNames(ctx);
  assert.equal(names.length, 2);
  for (const name of names) {
    assert.ok(name.length <= 80, name);
    assert.ok(name.startsWith(queueNamePrefix(ctx.desired.prefix)), name);
  }
  assert.equal((await rerun(ctx, args)).changes.length, 0);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("resource-pools never prunes another pool's queues that share its name prefix", async () => {
  // The pool of acme/widgets-2 has its own table; its queue names start with acme-widgets-.
  const other = await setup(["--repo", "acme/widgets-2", ...classes({ large: [2, 4096] })]);
  const otherDesired = other.desiredFrom([
    "--repo",
    "acme/widgets-2",
    ...classes({ large: [2, 4096] }),
  ]);
  await reconcileTable(withDesired(other, otherDesired));
  await reconcileResourcePools(withDesired(other, otherDesired));
  const outcome = await rerun(other, [...classes({ large: [2, 4096] }), "--prune"]);
  assert.deepEqual(outcome.changes.map((c) => `${c.action} ${c.target}`), [
    "create queue acme-widgets-large-ci-pool",
    "write metadata resource_class_config",
  ]);
  assert.deepEqual(outcome.warnings, []);
  assert.deepEqual(outcome.found.removed, []);
  assert.deepEqual(await tagsOf(other, "acme-widgets-2-large-ci-pool"), {
    "refresh:pool": "acme-widgets-2-ci-table",
  });
});

Deno.test("resource-pools fails without writing when a desired queue belongs to another pool", async () => {
  // Class "2-large" of acme/widgets and class "large" of acme/widgets-2 share a queue name.
  const ctx = await setup(["--repo", "acme/widgets-2", ...classes({ large: [2, 4096] })]);
  const otherDesired = ctx.desiredFrom([
    "--repo",
    "acme/widgets-2",
    ...classes({ large: [2, 4096] }),
  ]);
  await reconcileTable(withDesired(ctx, otherDesired));
  await reconcileResourcePools(withDesired(ctx, otherDesired));
  ctx.counter.reset();
  await assert.rejects(
    reconcileResourcePools(withDesired(ctx, ctx.desiredFrom(classes({ "2-large": [2, 4096] })))),
    {
      message:
        'queue acme-widgets-2-large-ci-pool (class "2-large") is tagged refresh:pool=acme-widgets-2-ci-table, another pool\'s table, not acme-widgets-ci-table; rename the class or remove that tag',
    },
  );
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("resource-pools adopts an untagged queue of a desired name by tagging it", async () => {
  const ctx = await setup(classes({ large: [2, 4096] }));
  await ctx.clients.sqs.send(
    new CreateQueueCommand({
      QueueName: "acme-widgets-large-ci-pool",
      Attributes: { VisibilityTimeout: "30", MessageRetentionPeriod: "345600" },
    }),
  );
  ctx.counter.reset();
  const outcome = await reconcileResourcePools(ctx);
  assert.deepEqual(outcome.changes.map((c) => `${c.action} ${c.target}`), [
    "tag queue acme-widgets-large-ci-pool",
    "write metadata resource_class_config",
  ]);
  assert.deepEqual(writes(ctx), { "SQS.TagQueue": 1, "DynamoDB.PutItem": 1 });
  assert.deepEqual(await tagsOf(ctx, "acme-widgets-large-ci-pool"), { "refresh:pool": TABLE });
});

Deno.test("resource-pools under dry-run lists what it would create, change and prune and writes nothing", async () => {
  const ctx = await setup();
  await reconcileResourcePools(ctx);
  await ctx.clients.sqs.send(
    new SetQueueAttributesCommand({
      QueueUrl: await urlOf(ctx, "acme-widgets-large-ci-pool"),
      Attributes: { MessageRetentionPeriod: "60" },
    }),
  );
  const before = await record(ctx);
  const args = [...classes({ large: [2, 4096], gpu: [8, 61440] }), "--prune", "--dry-run"];
  const outcome = await rerun(ctx, args);
  assert.deepEqual(outcome.changes.map((c) => `${c.action} ${c.target}`), [
    "set-attributes queue acme-widgets-large-ci-pool",
    "create queue acme-widgets-gpu-ci-pool",
    "delete queue acme-widgets-xlarge-ci-pool",
    "write metadata resource_class_config",
  ]);
  assert.equal(
    outcome.summary,
    "would create 1 queue, repair 1 queue, delete 1 queue, write the record",
  );
  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(await allQueueNames(ctx), [
    "acme-widgets-large-ci-pool",
    "acme-widgets-xlarge-ci-pool",
  ]);
  assert.equal(
    (await attributesOf(ctx, "acme-widgets-large-ci-pool")).MessageRetentionPeriod,
    "60",
  );
  assert.deepEqual(await record(ctx), before);
});

Deno.test("resource-pools under dry-run plans every queue when neither queues nor table exist", async () => {
  const ctx = await testContext([...TWO, "--dry-run"]);
  const outcome = await reconcileResourcePools(ctx);
  assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "create", "write"]);
  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(await allQueueNames(ctx), []);
});

Deno.test("listQueues follows NextToken across pages of one prefix listing", async () => {
  const ctx = await setup();
  for (const n of [1, 2, 3, 4, 5]) {
    await ctx.clients.sqs.send(new CreateQueueCommand({ QueueName: `acme-widgets-q${n}-ci-pool` }));
  }
  await ctx.clients.sqs.send(new CreateQueueCommand({ QueueName: "other-q-ci-pool" }));
  ctx.counter.reset();
  const queues = await listQueues(ctx.clients.sqs, "acme-widgets-", 2);
  assert.deepEqual(
    [...queues.keys()].sort(),
    [1, 2, 3, 4, 5].map((n) => `acme-widgets-q${n}-ci-pool`),
  );
  assert.equal(ctx.counter.total((op) => op === "SQS.ListQueues"), 3);
});

function problemsOf(args: string[], files: Record<string, string> = {}): string[] {
  try {
    parseDesiredState({
      args: [...BASE_ARGS, "--only", "resource-pools", ...args],
      env: {},
      readTextFile: (path) => files[path],
    });
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("parseDesiredState uses the default classes when resource-class-config is not given", () => {
  const desired = desiredFrom([]);
  assert.deepEqual(desired.pools.classes, DEFAULT_RESOURCE_CLASSES);
  assert.equal(desired.pools.queueNames["2xlarge"], "acme-widgets-2xlarge-ci-pool");
  assert.equal(desired.pools.visibilityTimeoutSec, 30);
  assert.equal(desired.pools.retentionSec, 345600);
  assert.equal(desired.pools.prune, false);
});

Deno.test("parseDesiredState lists every bad resource class at once", () => {
  const config = JSON.stringify({
    zero: { cpu: 0, mmem: 1024 },
    negative: { cpu: 2, mmem: -1 },
    fraction: { cpu: 1.5, mmem: 1024 },
    text: { cpu: "2", mmem: 1024 },
    "bad/name": { cpu: 1, mmem: 1 },
    Large: { cpu: 1, mmem: 1 },
    large: { cpu: 1, mmem: 1 },
  });
  assert.deepEqual(problemsOf(["--resource-class-config", config]), [
    "resource-class-config: zero.cpu must be a positive whole number, got 0",
    "resource-class-config: negative.mmem must be a positive whole number, got -1",
    "resource-class-config: fraction.cpu must be a positive whole number, got 1.5",
    'resource-class-config: text.cpu must be a positive whole number, got "2"',
    'resource-class-config: class "bad/name" must be 1-40 letters, digits, ".", "_" or "-", starting with a letter or digit',
    'resource-class-config: class "large" duplicates "Large" (names are case-insensitive)',
  ]);
});

Deno.test("parseDesiredState rejects a class given twice in the JSON text", () => {
  const twice = '{"large":{"cpu":2,"mmem":4096},"large":{"cpu":4,"mmem":8192}}';
  assert.deepEqual(problemsOf(["--resource-class-config", twice]), [
    'resource-class-config: "large" is given more than once',
  ]);
  const file = JSON.stringify({ "resource-class-config": { large: { cpu: 2, mmem: 4096 } } })
    .replace("}}}", '},"large":{"cpu":2,"mmem":4096}}}');
  assert.deepEqual(problemsOf(["--config", "pool.json"], { "pool.json": file }), [
    'config: key "resource-class-config.large" appears more than once in pool.json',
  ]);
});

Deno.test("parseDesiredState rejects malformed or empty resource class JSON", () => {
  const [malformed] = problemsOf(["--resource-class-config", '{"large":{"cpu":2,}']);
  assert.match(malformed, /^resource-class-config: malformed JSON \(/);
  assert.deepEqual(problemsOf(["--resource-class-config", "{}"]), [
    "resource-class-config: expected at least one resource class",
  ]);
  assert.deepEqual(problemsOf(["--resource-class-config", "[1]"]), [
    "resource-class-config: expected a JSON object of classes, got [1]",
  ]);
});

Deno.test("parseDesiredState rejects classes whose sanitized queue names collide", () => {
  const twin = `c5-large-${sha256("c5.large").slice(0, 8)}`;
  assert.equal(queueName("acme-widgets", twin), queueName("acme-widgets", "c5.large"));
  const config = JSON.stringify({ "c5.large": { cpu: 2, mmem: 1 }, [twin]: { cpu: 2, mmem: 1 } });
  assert.deepEqual(problemsOf(["--resource-class-config", config]), [
    `resource-class-config: classes "c5.large" and "${twin}" both map to queue name "${
      queueName("acme-widgets", twin)
    }"`,
  ]);
});

Deno.test("parseDesiredState rejects out-of-range queue attributes", () => {
  assert.deepEqual(
    problemsOf(["--queue-visibility-timeout", "43201", "--queue-retention-sec", "59"]),
    [
      'queue-visibility-timeout: expected a whole number 0-43200, got "43201"',
      'queue-retention-sec: expected a whole number 60-1209600, got "59"',
    ],
  );
});

Deno.test("refresh exits 2 and makes no AWS call when the resource class config is bad", async () => {
  const ctx = await testContext();
  const stderr: string[] = [];
  const code = await main(
    [...BASE_ARGS, "--only", "resource-pools", "--resource-class-config", '{"large":{"cpu":0}}'],
    AWS_ENV,
    { stdout: () => {}, stderr: (t) => stderr.push(t), readTextFile: () => "" },
  );
  assert.equal(code, 2);
  assert.match(stderr.join("\n"), /large\.cpu must be a positive whole number, got 0/);
  assert.match(stderr.join("\n"), /large\.mmem must be a positive whole number, got undefined/);
  assert.deepEqual(await allQueueNames(ctx), []);
});

// Each invalid input of the task: the problem names the field, the offending value and what is
// expected.
const INVALID: InvalidInput[] = [
  [
    "malformed resource-class JSON",
    [...BASE_ARGS, "--resource-class-config", "{large:"],
    undefined,
    /resource-class-config: malformed JSON/,
  ],
  [
    "zero cpu",
    [...BASE_ARGS, "--resource-class-config", '{"large":{"cpu":0,"mmem":1024}}'],
    undefined,
    /resource-class-config: large.cpu must be a positive whole number, got 0/,
  ],
  [
    "negative memory",
    [...BASE_ARGS, "--resource-class-config", '{"large":{"cpu":2,"mmem":-5}}'],
    undefined,
    /resource-class-config: large.mmem must be a positive whole number, got -5/,
  ],
  [
    "non-integer cpu",
    [...BASE_ARGS, "--resource-class-config", '{"large":{"cpu":2.5,"mmem":1024}}'],
    undefined,
    /large.cpu must be a positive whole number, got 2.5/,
  ],
];

Deno.test("resource-pools refuses invalid inputs with a message and sends no request", (t) =>
  checkRefused(t, INVALID));
