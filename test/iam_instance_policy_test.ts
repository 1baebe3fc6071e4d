/**
 * iam-instance-policy.json against what the generated bootstrap calls: every AWS CLI call in the
 * script, and the DynamoDB partitions and attributes each touches, read from the script itself
 * (as test/iam_policy_test.ts reads refresh's calls from its code). The small IAM model of
 * test/support/iam.ts (which refuses what IAM refuses to store) then checks that each call is
 * allowed, and that nothing else is.
 */
import assert from "node:assert/strict";
import { BOOTSTRAP_AWS_ACTIONS, bootstrapScript } from "../lib/bootstrap.ts";
import {
  allows as evaluate,
  list,
  OLD_SELF_TERMINATE_POLICY,
  type PolicyDocument,
  policyProblems,
  type Request,
  terminateRequest,
} from "./support/iam.ts";

const root = new URL("../", import.meta.url);

function policy(): PolicyDocument {
  return JSON.parse(Deno.readTextFileSync(new URL("iam-instance-policy.json", root)));
}

/** The bootstrap with no setup script: the operator's own calls are the operator's business. */
const SCRIPT = bootstrapScript({
  table: "acme-widgets-ci-table",
  region: "us-east-1",
  githubUrl: "https://github.com/acme/widgets",
  poolLabel: "refresh-pool-0123456789abcdef",
  runner: { version: "2.334.0", sha256: { x64: "a".repeat(64), arm64: "b".repeat(64) } },
});

/** The script's code: comments dropped, continued lines joined. */
function code(script: string): string {
  return script.split("\n").filter((line) => !/^\s*#/.test(line)).join("\n").replace(
    /\\\n\s*/g,
    " ",
  );
}

/**
 * The script's AWS calls → IAM action, with lines: those of its AWS client
 * (lib/bootstrap_aws_client.ts), `dynamodb("<Action>", …)` and EC2's `"Action": "<Action>"`, and
 * any AWS CLI call `aws <service> <command>` (directly or through a wrapper `aws_…`).
 */
function awsCalls(script: string): Map<string, string[]> {
  const calls = new Map<string, string[]>();
  for (const line of code(script).split("\n")) {
    const found = [
      ...[...line.matchAll(/\bdynamodb\("(\w+)"/g)].map((m) => `dynamodb:${m[1]}`),
      ...[...line.matchAll(/"Action": "(\w+)"/g)].map((m) => `ec2:${m[1]}`),
      ...[...line.matchAll(/\baws(?:_\w+)?\s+([a-z][a-z0-9]*)\s+([a-z][a-z0-9-]*)/g)].map((
        [, service, command],
      ) => `${service}:${command.split("-").map((w) => w[0].toUpperCase() + w.slice(1)).join("")}`),
    ];
    for (const action of found) calls.set(action, [...calls.get(action) ?? [], line.trim()]);
  }
  return calls;
}

/**
 * The partitions (`TYPE#…`) the script reads: `aws_client get ENTITY`, `get("ENTITY", …)`, and
 * `key ENTITY …` calls of a key helper.
 */
function keyPartitions(script: string): Set<string> {
  const found = new Set<string>();
  for (const [, entity] of code(script).matchAll(/\$\(key ([A-Z]+) /g)) found.add(`TYPE#${entity}`);
  for (const [, entity] of code(script).matchAll(/aws_client get ([A-Z]+) /g)) {
    found.add(`TYPE#${entity}`);
  }
  for (const [, entity] of code(script).matchAll(/(?<![.\w])get\("([A-Z]+)"/g)) {
    found.add(`TYPE#${entity}`);
  }
  return found;
}

/**
 * The items the script writes: each `put("ENTITY", id, {"<field>": …})` of its AWS client, which
 * adds PK, SK, entityType, identifier and updatedAt, as JSON of that shape.
 */
function items(script: string): Record<string, unknown>[] {
  return [...code(script).matchAll(/(?<![.\w])put\("([A-Z]+)", \w+, \{"(\w+)":/g)].map((
    [, entity, field],
  ) => ({
    PK: { S: `TYPE#${entity}` },
    SK: { S: "ID#x" },
    entityType: { S: entity },
    identifier: { S: "x" },
    [field]: { S: "x" },
    updatedAt: { S: "x" },
  }));
}

/**
 * The conditional updates the script makes: each `update("ENTITY", id, {values}, {expected})` of
 * its AWS client, as the partition and every attribute named (set or compared), PK and SK too.
 */
function updates(script: string): { partition: string; attributes: string[] }[] {
  return [
    ...code(script).matchAll(
      /(?<![.\w])update\("([A-Z]+)", \w+, \{([^}]*)\},\s*\{([^}]*)\}\)/g,
    ),
  ].map(([, entity, values, expected]) => ({
    partition: `TYPE#${entity}`,
    attributes: [
      "PK",
      "SK",
      ...[...`${values} ${expected}`.matchAll(/"(\w+)":/g)].map((m) => m[1]),
    ],
  }));
}

// ---- The policy, judged by the IAM model in test/support/iam.ts ----

function allows(request: Request): string[] {
  return evaluate(policy(), request);
}

const TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/acme-widgets-ci-table";
const SELF = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
const OTHER = "arn:aws:ec2:us-east-1:123456789012:instance/i-0fedcba9876543210";

function dynamo(action: string, partition: string, attributes?: string[]): Request {
  return {
    action,
    resource: TABLE_ARN,
    context: {
      "dynamodb:LeadingKeys": [partition],
      ...(attributes ? { "dynamodb:Attributes": attributes } : {}),
    },
  };
}

// ---- What the bootstrap calls ----

Deno.test("the bootstrap's AWS calls are read from its script", () => {
  const calls = awsCalls(SCRIPT);
  // No EC2 call: the instance ends itself by powering off (shutdown behaviour terminate).
  assert.deepEqual([...calls.keys()].sort(), [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
  ]);
  // One conditional update: an idle instance's own record, withdrawn on an interruption notice.
  assert.deepEqual(updates(SCRIPT), [{
    partition: "TYPE#INSTANCE",
    attributes: ["PK", "SK", "threshold", "updatedAt", "interruption", "threshold"],
  }]);
  // Keys go only to reads, items only to writes.
  assert.ok(calls.get("dynamodb:GetItem")!.every((l) => l.includes('"Key"')));
  assert.ok(calls.get("dynamodb:PutItem")!.every((l) => l.includes('"Item"')));
  assert.ok(!/"Key"/.test(calls.get("dynamodb:PutItem")!.join("\n")));
  assert.doesNotMatch(code(SCRIPT), /TerminateInstances|"InstanceId\.1"/);
  assert.deepEqual(
    [...code(SCRIPT).matchAll(/self-terminate (\S+)/g)].map((m) => m[1]),
    ['"$INSTANCE_ID"'],
  );
  assert.match(
    code(SCRIPT),
    /self-terminate "\$INSTANCE_ID" "\$SELF_TERMINATE_CHECK_SEC" &&\s+power_off/,
  );
  assert.deepEqual([...keyPartitions(SCRIPT)].sort(), ["TYPE#INSTANCE", "TYPE#METADATA"]);
  assert.deepEqual(
    items(SCRIPT).map((i) => Object.keys(i).join(",")),
    [
      "PK,SK,entityType,identifier,value,updatedAt",
      "PK,SK,entityType,identifier,value,updatedAt",
    ],
  );
});

Deno.test("the calls read from the script are BOOTSTRAP_AWS_ACTIONS, which a real run is checked against", () => {
  // test/bootstrap_test.ts records the calls of a real run through a proxy and compares them with
  // BOOTSTRAP_AWS_ACTIONS; this ties that list, the script as read here, and the policy together.
  const fromScript = [...awsCalls(SCRIPT).keys()].sort().map((action) => ({
    action,
    ...(action === "dynamodb:GetItem" ? { partitions: [...keyPartitions(SCRIPT)].sort() } : {}),
    ...(action === "dynamodb:PutItem"
      ? { partitions: [...new Set(items(SCRIPT).map((i) => (i.PK as { S: string }).S))].sort() }
      : {}),
    ...(action === "dynamodb:UpdateItem"
      ? { partitions: [...new Set(updates(SCRIPT).map((u) => u.partition))].sort() }
      : {}),
  }));
  const declared = [...BOOTSTRAP_AWS_ACTIONS].map((a) => ({
    ...a,
    ...(a.partitions ? { partitions: [...a.partitions].sort() } : {}),
  })).sort((x, y) => x.action.localeCompare(y.action));
  assert.deepEqual(fromScript, declared);
});

Deno.test("iam-instance-policy.json allows every call the bootstrap makes", () => {
  const missing: string[] = [];
  for (const partition of keyPartitions(SCRIPT)) {
    if (allows(dynamo("dynamodb:GetItem", partition)).length === 0) {
      missing.push(`dynamodb:GetItem on ${partition}`);
    }
  }
  for (const item of items(SCRIPT)) {
    const partition = (item.PK as { S: string }).S;
    if (allows(dynamo("dynamodb:PutItem", partition, Object.keys(item))).length === 0) {
      missing.push(`dynamodb:PutItem of ${partition} items (${Object.keys(item).join(", ")})`);
    }
  }
  for (const u of updates(SCRIPT)) {
    const request = dynamo("dynamodb:UpdateItem", u.partition, [...new Set(u.attributes)]);
    if (allows(request).length === 0) {
      missing.push(`dynamodb:UpdateItem of ${u.partition} (${u.attributes.join(", ")})`);
    }
  }
  assert.deepEqual(missing, []);
});

Deno.test("iam-instance-policy.json allows nothing the bootstrap does not do", async (t) => {
  const called = awsCalls(SCRIPT);
  const listed = new Set(policy().Statement.flatMap((s) => list(s.Action)));
  assert.deepEqual([...listed].sort(), [...called.keys()].sort(), "exactly the actions called");

  await t.step("partitions and attributes: exactly those the script touches", () => {
    const touched: Record<string, Set<string>> = {
      "dynamodb:GetItem": keyPartitions(SCRIPT),
      "dynamodb:PutItem": new Set(items(SCRIPT).map((i) => (i.PK as { S: string }).S)),
      "dynamodb:UpdateItem": new Set(updates(SCRIPT).map((u) => u.partition)),
    };
    const attributes = new Set(items(SCRIPT).flatMap((i) => Object.keys(i)));
    for (const s of policy().Statement.filter((s) => list(s.Action)[0].startsWith("dynamodb:"))) {
      const keys = s.Condition?.["ForAllValues:StringEquals"] ?? {};
      for (const action of list(s.Action)) {
        assert.deepEqual(
          new Set(list(keys["dynamodb:LeadingKeys"] ?? [])),
          touched[action],
          `${s.Sid}: ${action}`,
        );
      }
      if (list(s.Action).includes("dynamodb:PutItem")) {
        assert.deepEqual(new Set(list(keys["dynamodb:Attributes"] ?? [])), attributes);
      }
      if (list(s.Action).includes("dynamodb:UpdateItem")) {
        assert.deepEqual(
          new Set(list(keys["dynamodb:Attributes"] ?? [])),
          new Set(updates(SCRIPT).flatMap((u) => u.attributes)),
        );
      }
    }
  });

  const denied: [string, Request][] = [
    ["reading the heartbeat partition", dynamo("dynamodb:GetItem", "TYPE#HEARTBEAT")],
    ["writing an instance record", dynamo("dynamodb:PutItem", "TYPE#INSTANCE", ["PK", "SK"])],
    ["writing a metadata record", dynamo("dynamodb:PutItem", "TYPE#METADATA", ["PK", "SK"])],
    [
      "writing an attribute outside the protocol's item",
      dynamo("dynamodb:PutItem", "TYPE#WS", ["PK", "SK", "value", "state"]),
    ],
    ["deleting an item", dynamo("dynamodb:DeleteItem", "TYPE#WS")],
    [
      "updating an instance record's state or run id",
      dynamo("dynamodb:UpdateItem", "TYPE#INSTANCE", ["PK", "SK", "state", "runId"]),
    ],
    [
      "updating a metadata record",
      dynamo("dynamodb:UpdateItem", "TYPE#METADATA", ["PK", "SK", "threshold"]),
    ],
    ["reading another table", {
      ...dynamo("dynamodb:GetItem", "TYPE#INSTANCE"),
      resource: "arn:aws:dynamodb:us-east-1:123456789012:table/payroll",
    }],
    [
      "terminating another instance of the pool",
      terminateRequest(OTHER, { source: SELF, tags: { AllowSelfTermination: "true" } }),
    ],
    [
      "terminating itself (it powers off instead)",
      terminateRequest(SELF, { source: SELF, tags: { AllowSelfTermination: "true" } }),
    ],
    [
      "terminating itself without AllowSelfTermination=true",
      terminateRequest(SELF, { source: SELF, tags: { AllowSelfTermination: "false" } }),
    ],
    [
      "terminating itself without the AllowSelfTermination tag",
      terminateRequest(SELF, { source: SELF }),
    ],
    [
      "terminating from outside an instance (no instance credentials)",
      terminateRequest(SELF, { tags: { AllowSelfTermination: "true" } }),
    ],
    [
      "terminating the same instance id in another region",
      terminateRequest(SELF.replace("us-east-1", "eu-west-1"), {
        source: SELF,
        tags: { AllowSelfTermination: "true" },
      }),
    ],
  ];
  for (const [name, request] of denied) {
    await t.step(name, () => assert.deepEqual(allows(request), []));
  }
});

Deno.test("iam-instance-policy.json is a valid allow-only policy naming its resources", () => {
  const doc = policy();
  assert.deepEqual(policyProblems(doc), []);
  for (const s of doc.Statement) {
    assert.equal(s.Effect, "Allow");
    assert.ok(s.Sid, "every statement says what it is for");
    for (const resource of list(s.Resource)) assert.notEqual(resource, "*", `${s.Sid}: no *`);
  }
});

Deno.test("the script reader finds calls written directly or through a wrapper, not in comments", () => {
  const script = [
    "# aws s3 cp is only mentioned here",
    "aws sqs send-message --queue-url q",
    "aws_call dynamodb delete-item --table-name t \\",
    '  --key "$(key WS "$id")"',
    "log 'the AWS CLI (aws) is not on PATH'",
    '    dynamodb("Query", {"TableName": TABLE})',
    '    value = get("HEARTBEAT", instance, "value.S")',
    '    environment.get("AWS_ENDPOINT_URL")',
  ].join("\n");
  assert.deepEqual([...awsCalls(script).keys()], [
    "sqs:SendMessage",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
  ]);
  assert.deepEqual([...keyPartitions(script)], ["TYPE#WS", "TYPE#HEARTBEAT"]);
});

Deno.test("the evaluator refuses the old policy's Resource ${ec2:SourceInstanceARN}, as IAM does", () => {
  // IAM accepts policy variables only in an ARN's trailing part and answers
  // MalformedPolicyDocument otherwise; the evaluator used to resolve the variable and allow it.
  const old = OLD_SELF_TERMINATE_POLICY;
  assert.deepEqual(policyProblems(old), [
    "TerminateItself: Resource ${ec2:SourceInstanceARN} is not an ARN or *",
  ]);
  assert.throws(
    () =>
      evaluate(
        old,
        terminateRequest(SELF, { source: SELF, tags: { AllowSelfTermination: "true" } }),
      ),
    /MalformedPolicyDocument: TerminateItself: Resource \$\{ec2:SourceInstanceARN\}/,
  );
});
