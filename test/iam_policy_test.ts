import assert from "node:assert/strict";
import { type PolicyDocument, policyProblems } from "./support/iam.ts";

const root = new URL("../", import.meta.url);

/** IAM service prefix of each AWS SDK module refresh imports. */
const SERVICES: Record<string, string> = {
  "@aws-sdk/client-ec2": "ec2",
  "@aws-sdk/client-sqs": "sqs",
  "@aws-sdk/client-dynamodb": "dynamodb",
  "@aws-sdk/lib-dynamodb": "dynamodb",
  "@aws-sdk/client-cloudwatch": "cloudwatch",
};

/** lib-dynamodb's document commands and the DynamoDB operations they send. */
const DOCUMENT_COMMANDS: Record<string, string> = {
  Get: "GetItem",
  Put: "PutItem",
  Update: "UpdateItem",
  Delete: "DeleteItem",
  Query: "Query",
  Scan: "Scan",
  BatchGet: "BatchGetItem",
  BatchWrite: "BatchWriteItem",
  TransactGet: "TransactGetItems",
  TransactWrite: "TransactWriteItems",
  ExecuteStatement: "ExecuteStatement",
};

/**
 * IAM actions an operation needs besides its own name: a batch authorized as its single form
 * (SQS), and a launch that runs instances with an instance profile (CreateFleet).
 */
const IMPLIED: Record<string, string[]> = {
  "sqs:SendMessageBatch": ["sqs:SendMessage"],
  "ec2:CreateFleet": ["ec2:CreateFleet", "ec2:RunInstances", "iam:PassRole"],
};

/** Waiters and the operation they poll. */
const WAITERS: Record<string, string> = {
  waitUntilTableExists: "DescribeTable",
  waitUntilTableNotExists: "DescribeTable",
  waitUntilInstanceRunning: "DescribeInstances",
  waitUntilInstanceTerminated: "DescribeInstances",
  waitUntilInstanceStopped: "DescribeInstances",
  waitUntilImageAvailable: "DescribeImages",
};

/** The source files that make AWS calls: refresh.ts and every module in lib/ and its folders. */
function sources(): Map<string, string> {
  const files = new Map<string, string>();
  files.set("refresh.ts", Deno.readTextFileSync(new URL("refresh.ts", root)));
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(new URL(dir, root))) {
      const path = `${dir}${entry.name}`;
      if (entry.isDirectory) walk(`${path}/`);
      else if (entry.isFile && entry.name.endsWith(".ts")) {
        files.set(path, Deno.readTextFileSync(new URL(path, root)));
      }
    }
  };
  walk("lib/");
  return files;
}

/** The names a file imports from each AWS SDK module, as name -> module. */
function awsImports(source: string): Map<string, string> {
  const names = new Map<string, string>();
  const pattern = /import\s*(?:type\s*)?\{([^}]*)\}\s*from\s*"npm:(@aws-sdk\/[a-z0-9-]+)@[^"]+"/g;
  for (const [, list, module] of source.matchAll(pattern)) {
    for (const part of list.split(",")) {
      const name = part.trim().replace(/^type\s+/, "").split(/\s+as\s+/).pop()!.trim();
      if (name) names.set(name, module);
    }
  }
  return names;
}

/**
 * The IAM actions the code calls, by file: every `new XxxCommand(`, `paginateXxx(` and waiter,
 * mapped to `service:Xxx` by the SDK module it is imported from. A create-time tag also needs
 * the tagging action: EC2 `TagSpecifications` needs ec2:CreateTags, SQS `CreateQueue` with `tags`
 * needs sqs:TagQueue.
 */
function calledActions(): Map<string, Set<string>> {
  const actions = new Map<string, Set<string>>();
  const add = (action: string, file: string) => {
    for (const a of IMPLIED[action] ?? [action]) {
      if (!actions.has(a)) actions.set(a, new Set());
      actions.get(a)!.add(file);
    }
  };
  for (const [file, source] of sources()) {
    const imports = awsImports(source);
    const serviceOf = (name: string) => {
      const module = imports.get(name);
      assert.ok(module, `${file}: ${name} is used but not imported from an @aws-sdk module`);
      assert.ok(SERVICES[module], `${file}: ${module} has no IAM service prefix in this test`);
      return { module, service: SERVICES[module] };
    };
    for (const [, op] of source.matchAll(/\bnew\s+(\w+)Command\s*\(/g)) {
      const { module, service } = serviceOf(`${op}Command`);
      const operation = module === "@aws-sdk/lib-dynamodb" ? DOCUMENT_COMMANDS[op] : op;
      assert.ok(operation, `${file}: no DynamoDB operation known for ${op}Command`);
      add(`${service}:${operation}`, file);
    }
    for (const [, op] of source.matchAll(/\bpaginate(\w+)\s*\(/g)) {
      const { module, service } = serviceOf(`paginate${op}`);
      add(`${service}:${module === "@aws-sdk/lib-dynamodb" ? DOCUMENT_COMMANDS[op] : op}`, file);
    }
    for (const [, waiter] of source.matchAll(/\b(waitUntil\w+)\s*\(/g)) {
      const { service } = serviceOf(waiter);
      assert.ok(WAITERS[waiter], `${file}: the operation ${waiter} polls is not known here`);
      add(`${service}:${WAITERS[waiter]}`, file);
    }
    if (/\bTagSpecifications\s*:/.test(source) && imports.size) add("ec2:CreateTags", file);
    if (/new\s+CreateQueueCommand\s*\(\s*\{[^)]*\btags\s*:/s.test(source)) {
      add("sqs:TagQueue", file);
    }
  }
  return actions;
}

interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Condition?: unknown;
}

function policy(): { Version: string; Statement: Statement[] } {
  return JSON.parse(Deno.readTextFileSync(new URL("iam-policy.json", root)));
}

function listedActions(): string[] {
  return policy().Statement.flatMap((s) => typeof s.Action === "string" ? [s.Action] : s.Action);
}

Deno.test("iam-policy.json lists every AWS action the code calls", () => {
  const listed = new Set(listedActions());
  const missing = [...calledActions()].filter(([action]) => !listed.has(action))
    .map(([action, files]) => `${action} (called in ${[...files].join(", ")})`);
  assert.deepEqual(missing, [], `add to iam-policy.json: ${missing.join("; ")}`);
});

Deno.test("iam-policy.json lists no action the code does not call", () => {
  const called = calledActions();
  const unused = [...new Set(listedActions())].filter((a) => !called.has(a));
  assert.deepEqual(unused, [], `remove from iam-policy.json: ${unused.join(", ")}`);
});

Deno.test("iam-policy.json is a valid allow-only policy without wildcard actions", () => {
  const doc = policy();
  assert.deepEqual(policyProblems(doc as PolicyDocument), [], "what IAM would refuse to store");
  assert.ok(doc.Statement.length > 0);
  const actions = listedActions();
  for (const s of doc.Statement) {
    const own = typeof s.Action === "string" ? [s.Action] : s.Action;
    assert.equal(new Set(own).size, own.length, `statement ${s.Sid} lists each action once`);
    assert.equal(s.Effect, "Allow");
    assert.ok(s.Resource && s.Resource.length > 0, `statement ${s.Sid} has a resource`);
  }
  for (const a of actions) assert.match(a, /^(ec2|sqs|dynamodb|iam|cloudwatch):[A-Z][A-Za-z]+$/);
});

Deno.test("the action scan maps commands, document commands, paginators and waiters", () => {
  const source = `
    import { DescribeTableCommand, waitUntilTableExists } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
    import {
      type Foo,
      UpdateCommand,
    } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
    import { paginateDescribeInstances } from "npm:@aws-sdk/client-ec2@3.1169.0";`;
  const imports = awsImports(source);
  assert.equal(imports.get("UpdateCommand"), "@aws-sdk/lib-dynamodb");
  assert.equal(imports.get("Foo"), "@aws-sdk/lib-dynamodb");
  assert.equal(imports.get("waitUntilTableExists"), "@aws-sdk/client-dynamodb");
  assert.equal(imports.get("paginateDescribeInstances"), "@aws-sdk/client-ec2");
  assert.ok(calledActions().get("dynamodb:DescribeTable")?.has("lib/table.ts"));
});

/** The statements that allow an action. */
function allowing(action: string): Statement[] {
  return policy().Statement.filter((s) =>
    (typeof s.Action === "string" ? [s.Action] : s.Action).includes(action)
  );
}

Deno.test("iam-policy.json terminates only instances carrying the pool's ownership tag", () => {
  const statements = allowing("ec2:TerminateInstances");
  assert.ok(statements.length > 0);
  for (const s of statements) {
    assert.deepEqual(
      s.Condition,
      { StringLike: { "aws:ResourceTag/refresh:pool": "*-ci-table" } },
      `statement ${s.Sid}`,
    );
  }
});

Deno.test("iam-policy.json changes only launch templates carrying the pool's ownership tag, and creates them only with it", () => {
  for (
    const action of [
      "ec2:CreateLaunchTemplateVersion",
      "ec2:ModifyLaunchTemplate",
      "ec2:DeleteLaunchTemplateVersions",
      "ec2:DeleteLaunchTemplate",
    ]
  ) {
    for (const s of allowing(action)) {
      assert.deepEqual(
        s.Condition,
        { StringLike: { "aws:ResourceTag/refresh:pool": "*-ci-table" } },
        `${action} in ${s.Sid}`,
      );
    }
  }
  for (const s of allowing("ec2:CreateLaunchTemplate")) {
    assert.deepEqual(s.Condition, {
      StringLike: { "aws:RequestTag/refresh:pool": "*-ci-table" },
    }, `statement ${s.Sid}`);
  }
  // Tagging a template is allowed only at creation or on an untagged one, and only this tag.
  const onTemplates = (s: Statement) =>
    [s.Resource].flat().some((r) => r.includes("launch-template"));
  for (const s of allowing("ec2:CreateTags").filter(onTemplates)) {
    const condition = s.Condition as Record<string, Record<string, unknown>>;
    assert.deepEqual(condition["ForAllValues:StringEquals"], { "aws:TagKeys": ["refresh:pool"] });
    assert.ok(
      condition.StringEquals?.["ec2:CreateAction"] === "CreateLaunchTemplate" ||
        condition.Null?.["aws:ResourceTag/refresh:pool"] === "true",
      `statement ${s.Sid}`,
    );
  }
});

Deno.test("iam-policy.json launches warm instances only tagged for a pool, tags only at launch, and passes roles only to EC2", () => {
  const run = allowing("ec2:RunInstances");
  const instances = run.filter((s) => [s.Resource].flat().some((r) => r.includes(":instance/")));
  assert.ok(instances.length > 0);
  for (const s of instances) {
    assert.deepEqual(s.Condition, {
      StringLike: { "aws:RequestTag/refresh:pool": "*-ci-table" },
    }, `statement ${s.Sid}`);
  }
  for (
    const s of run.filter((s) => [s.Resource].flat().some((r) => r.includes("launch-template")))
  ) {
    assert.deepEqual(s.Condition, {
      StringLike: { "aws:ResourceTag/refresh:pool": "*-ci-table" },
    }, `statement ${s.Sid}`);
  }
  for (const s of allowing("ec2:CreateTags")) {
    if ([s.Resource].flat().some((r) => r.includes("launch-template"))) continue;
    assert.deepEqual(s.Condition, {
      StringEquals: { "ec2:CreateAction": ["CreateFleet", "RunInstances"] },
    }, `statement ${s.Sid}`);
  }
  for (const s of allowing("iam:PassRole")) {
    assert.deepEqual(s.Condition, {
      StringEquals: { "iam:PassedToService": "ec2.amazonaws.com" },
    }, `statement ${s.Sid}`);
  }
});
