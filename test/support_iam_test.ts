/** The IAM model of test/support/iam.ts: what it refuses, and how it evaluates conditions. */
import assert from "node:assert/strict";
import {
  allows,
  type PolicyDocument,
  policyProblems,
  resourceProblem,
  terminateRequest,
  wildcard,
} from "./support/iam.ts";

const SELF = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

function one(statement: PolicyDocument["Statement"][number]): PolicyDocument {
  return { Version: "2012-10-17", Statement: [statement] };
}

Deno.test("resourceProblem accepts * and ARNs, variables only in the trailing part", () => {
  assert.equal(resourceProblem("*"), undefined);
  assert.equal(resourceProblem("arn:aws:ec2:*:*:instance/*"), undefined);
  assert.equal(resourceProblem("arn:aws:s3:::bucket/${aws:username}/*"), undefined);
  assert.equal(resourceProblem("${ec2:SourceInstanceARN}"), "is not an ARN or *");
  assert.match(resourceProblem("arn:aws:ec2:instance/x")!, /is not an ARN/);
  assert.match(resourceProblem("arn:aws:ec2:${aws:RequestedRegion}:*:instance/*")!, /outside/);
});

Deno.test("policyProblems lists every problem of a document at once", () => {
  const problems = policyProblems({
    Version: "2008-10-17",
    Statement: [{
      Sid: "Bad",
      Effect: "Permit",
      Action: ["TerminateInstances"],
      Resource: ["${ec2:SourceInstanceARN}"],
      Condition: { NumericEquals: { "aws:MultiFactorAuthAge": "1" } },
    }],
  });
  assert.equal(problems.length, 5, problems.join("\n"));
});

Deno.test("a condition on a key the request lacks fails, a variable without value matches nothing", () => {
  const policy = one({
    Sid: "S",
    Effect: "Allow",
    Action: "ec2:TerminateInstances",
    Resource: "arn:aws:ec2:*:*:instance/*",
    Condition: { StringEquals: { "aws:ARN": "${ec2:SourceInstanceARN}" } },
  });
  assert.deepEqual(allows(policy, terminateRequest(SELF, { source: SELF })), ["S"]);
  assert.deepEqual(allows(policy, terminateRequest(SELF, {})), []);
});

Deno.test("ArnEquals compares the six parts of an ARN, with wildcards in each", () => {
  const policy = one({
    Sid: "S",
    Effect: "Allow",
    Action: "ec2:TerminateInstances",
    Resource: "arn:aws:ec2:*:*:instance/*",
    Condition: {
      ArnEquals: {
        "ec2:SourceInstanceARN":
          "arn:aws:ec2:${aws:RequestedRegion}:${aws:PrincipalAccount}:instance/${ec2:InstanceID}",
      },
    },
  });
  assert.deepEqual(allows(policy, terminateRequest(SELF, { source: SELF })), ["S"]);
  const other = SELF.replace("i-0123456789abcdef0", "i-0fedcba9876543210");
  assert.deepEqual(allows(policy, terminateRequest(other, { source: SELF })), []);
  const elsewhere = SELF.replace("us-east-1", "eu-west-1");
  assert.deepEqual(allows(policy, terminateRequest(elsewhere, { source: SELF })), []);
});

Deno.test("ForAllValues holds when every value is allowed, and (as in IAM) when the key is absent", () => {
  const policy = one({
    Sid: "S",
    Effect: "Allow",
    Action: "dynamodb:GetItem",
    Resource: "arn:aws:dynamodb:*:*:table/t",
    Condition: { "ForAllValues:StringEquals": { "dynamodb:LeadingKeys": ["A", "B"] } },
  });
  const get = (context: Record<string, string[]>) =>
    allows(policy, {
      action: "dynamodb:GetItem",
      resource: "arn:aws:dynamodb:us-east-1:1:table/t",
      context,
    });
  assert.deepEqual(get({ "dynamodb:LeadingKeys": ["A"] }), ["S"]);
  assert.deepEqual(get({ "dynamodb:LeadingKeys": ["A", "C"] }), []);
  assert.deepEqual(get({}), ["S"]);
});

Deno.test("wildcard matches * and ? over the whole value", () => {
  assert.ok(wildcard("table/*-ci-table", "table/acme-ci-table"));
  assert.ok(!wildcard("table/*-ci-table", "table/acme-ci-table2"));
  assert.ok(wildcard("i-?", "i-1"));
  assert.ok(!wildcard("a.b", "axb"));
});
