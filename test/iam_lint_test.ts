/**
 * Both shipped policies through a real IAM policy linter: parliament (PyPI, pinned in
 * test/support/tools.sh, with its community auditors). No finding at MEDIUM or above, except the
 * few listed in ACCEPTED, each matched exactly (file, issue and detail) and each explained: a
 * new finding, or the same issue about another key or action, fails.
 */
import assert from "node:assert/strict";
import { OLD_SELF_TERMINATE_POLICY } from "./support/iam.ts";
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
    file: "iam-policy.json",
    issue: "PERMISSIONS_MANAGEMENT_ACTIONS",
    detail: ["sqs:createqueue", "sqs:setqueueattributes", "iam:passrole"],
    why: "a community auditor: CreateQueue and SetQueueAttributes can set a queue's access " +
      "policy. refresh needs them to create and reconcile its queues, and the statement grants " +
      "them only on *-ci-pool queues; refresh never sends a Policy attribute. iam:PassRole is " +
      "what launching a warm instance with the runners' instance profile takes (as provision's " +
      "own CreateFleet does), granted only with iam:PassedToService = ec2.amazonaws.com.",
  },
  {
    file: "iam-policy.json",
    issue: "PRIVILEGE_ESCALATION",
    detail: ["iam:passrole", "ec2:runinstances"],
    why: "CreateEC2WithExistingIP: whoever may launch an instance with a role can act as that " +
      "role. The warm pool launches runners with their instance profile, exactly what provision " +
      "does; RunInstances is granted only for instances carrying the refresh:pool request tag " +
      "and only from a launch template tagged refresh:pool. Without a warm pool, drop the " +
      "LaunchWarmPool* and PassRunnerRoleToWarmPoolInstances statements.",
  },
  ...(
    [
      ["LaunchWarmPoolInstances", ["image", "network-interface", "security-group", "subnet"]],
      [
        "LaunchWarmPoolFromPoolTemplate",
        ["image", "instance", "network-interface", "security-group", "subnet"],
      ],
      ["LaunchWarmPoolResources", ["instance"]],
    ] as const
  ).map(([sid, types]) => ({
    file: "iam-policy.json",
    issue: "RESOURCE_MISMATCH",
    detail: `${sid}: ec2:RunInstances without ${types.join(", ")}`,
    why: "parliament wants every resource type RunInstances touches in each statement; the " +
      "warm pool's launch is split by resource type on purpose, as the EC2 user guide's " +
      "launch examples are, so the instance is allowed only with the refresh:pool request tag " +
      "(a request tag is not in the context of a subnet or image) and the template only when " +
      "tagged refresh:pool. IAM allows a RunInstances when each of its resources is allowed by " +
      "some statement; test/support/iam.ts's model does not evaluate RunInstances.",
  })),
];

/**
 * A RESOURCE_MISMATCH finding as one line: the Sid of the statement at its line (the first Sid
 * from there on) and the resource types it lacks.
 */
function mismatch(file: string, finding: ParliamentFinding): string {
  const detail = (finding.detail as unknown as { action: string; required_format: string }[]) ??
    [];
  const types = detail.map((d) =>
    /:([a-z-]+)\/\*$/.exec(d.required_format)?.[1] ?? d.required_format
  );
  const lines = Deno.readTextFileSync(new URL(file, root)).split("\n");
  const from = Number(finding.location.line ?? 1) - 1;
  const sid = lines.slice(from).map((l) => /"Sid":\s*"([^"]+)"/.exec(l)?.[1]).find(Boolean);
  return `${sid}: ${detail[0]?.action} without ${types.join(", ")}`;
}

function matches(accepted: Accepted, file: string, finding: ParliamentFinding): boolean {
  if (accepted.file !== file || accepted.issue !== finding.issue) return false;
  if (finding.issue === "RESOURCE_MISMATCH") return accepted.detail === mismatch(file, finding);
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
      JSON.stringify(OLD_SELF_TERMINATE_POLICY),
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
