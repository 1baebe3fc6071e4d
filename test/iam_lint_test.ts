/**
 * Both shipped policies through a real IAM policy linter: parliament (PyPI, pinned in
 * test/support/tools.sh, with its community auditors). No finding at MEDIUM or above, except the
 * few listed in ACCEPTED, each matched exactly (file, issue and detail) and each explained: a
 * new finding, or the same issue about another key or action, fails.
 */
import assert from "node:assert/strict";
import { parliament, type ParliamentFinding } from "./support/tools_bin.ts";

const root = new URL("../", import.meta.url);
const POLICIES = ["iam-policy.json", "iam-instance-policy.json"];

interface Accepted {
  file: string;
  issue: string;
  /** parliament's `detail`, or for action findings the actions it names. */
  detail: string | string[];
  why: string;
}

/** parliament's findings that are known gaps in its data, or accepted trade-offs. */
const ACCEPTED: Accepted[] = [
  {
    file: "iam-instance-policy.json",
    issue: "UNKNOWN_CONDITION_FOR_ACTION",
    detail: "Unknown condition aws:ARN for action ec2:TerminateInstances",
    why: "aws:ARN (the ARN of the resource acted on) is not in AWS's list of condition keys, so " +
      "parliament does not know it; it is the key terraform-aws-github-runner's runners use to " +
      "tag only themselves. TerminateItselfById does the same with documented keys only; either " +
      "statement suffices, and each fails closed when IAM leaves its key out.",
  },
  {
    file: "iam-instance-policy.json",
    issue: "UNKNOWN_CONDITION_FOR_ACTION",
    detail: "Unknown condition ec2:SourceInstanceARN for action ec2:TerminateInstances",
    why: "the EC2 user guide documents ec2:SourceInstanceARN as an AWS global condition key " +
      "(present on every request signed with instance-profile credentials); parliament's data " +
      "lists it only for the actions whose table names it.",
  },
  {
    file: "iam-policy.json",
    issue: "PERMISSIONS_MANAGEMENT_ACTIONS",
    detail: ["sqs:createqueue", "sqs:setqueueattributes"],
    why: "a community auditor: CreateQueue and SetQueueAttributes can set a queue's access " +
      "policy. refresh needs them to create and reconcile its queues, and the statement grants " +
      "them only on *-ci-pool queues; refresh never sends a Policy attribute.",
  },
];

function matches(accepted: Accepted, file: string, finding: ParliamentFinding): boolean {
  if (accepted.file !== file || accepted.issue !== finding.issue) return false;
  if (typeof accepted.detail === "string") return accepted.detail === finding.detail;
  const actions = (finding.location.actions as string[] | undefined) ?? [];
  return JSON.stringify([...actions].sort()) === JSON.stringify([...accepted.detail].sort());
}

function unexplained(file: string, findings: ParliamentFinding[]): string[] {
  return findings.filter((f) => !ACCEPTED.some((a) => matches(a, file, f))).map((f) =>
    `${file}: ${f.severity} ${f.issue}: ${f.detail || JSON.stringify(f.location)} (line ${
      f.location.line ?? "?"
    })`
  );
}

for (const file of POLICIES) {
  Deno.test(`parliament finds nothing at MEDIUM or above in ${file}, but the accepted findings`, async () => {
    const findings = await parliament(new URL(file, root).pathname);
    assert.deepEqual(unexplained(file, findings), []);
  });
}

Deno.test("every accepted parliament finding still occurs (none is kept once it is gone)", async () => {
  const stale: string[] = [];
  for (const file of POLICIES) {
    const findings = await parliament(new URL(file, root).pathname);
    for (const accepted of ACCEPTED.filter((a) => a.file === file)) {
      if (!findings.some((f) => matches(accepted, file, f))) {
        stale.push(`${file}: ${accepted.issue} ${accepted.detail}`);
      }
    }
  }
  assert.deepEqual(stale, []);
});

Deno.test("parliament rejects the old instance policy's Resource ${ec2:SourceInstanceARN}", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const file = `${dir}/old-instance-policy.json`;
    Deno.writeTextFileSync(
      file,
      JSON.stringify({
        Version: "2012-10-17",
        Statement: [{
          Sid: "TerminateItself",
          Effect: "Allow",
          Action: ["ec2:TerminateInstances"],
          Resource: "${ec2:SourceInstanceARN}",
          Condition: { StringEquals: { "aws:ResourceTag/AllowSelfTermination": "true" } },
        }],
      }),
    );
    const findings = await parliament(file);
    assert.deepEqual(findings.map((f) => [f.issue, f.severity]), [["INVALID_ARN", "MEDIUM"]]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("an accepted finding covers only its own key: the same issue about another key fails", () => {
  const other: ParliamentFinding = {
    issue: "UNKNOWN_CONDITION_FOR_ACTION",
    title: "Unknown condition for action",
    severity: "MEDIUM",
    detail: "Unknown condition aws:SourceIp for action ec2:TerminateInstances",
    location: { line: 1 },
  };
  assert.equal(unexplained("iam-instance-policy.json", [other]).length, 1);
  const moreActions: ParliamentFinding = {
    issue: "PERMISSIONS_MANAGEMENT_ACTIONS",
    title: "Permissions management actions",
    severity: "MEDIUM",
    detail: "",
    location: { actions: ["sqs:setqueueattributes", "sqs:createqueue", "sqs:addpermission"] },
  };
  assert.equal(unexplained("iam-policy.json", [moreActions]).length, 1);
});
