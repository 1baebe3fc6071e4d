import assert from "node:assert/strict";
import {
  addMask,
  annotation,
  annotations,
  describeFound,
  escapeData,
  jobSummary,
} from "../lib/actions.ts";
import type { RunReport } from "../lib/report.ts";
import type { TaskResult } from "../lib/task.ts";
import { actionsOutput, main } from "../refresh.ts";
import { Redactor } from "../lib/redact.ts";
import { BASE_ARGS, baseArgs, TEST_PAT } from "./support/aws.ts";
import { AWS_ENV, resetMoto } from "./support/moto.ts";
import { startFakeGithub } from "./support/github.ts";

const ONLY = ["--only", "table,parameters"];

function result(task: TaskResult["task"], fields: Partial<TaskResult> = {}): TaskResult {
  return {
    task,
    status: "unchanged",
    summary: "ok",
    found: {},
    changes: [],
    warnings: [],
    durationMs: 1,
    ...fields,
  };
}

function report(results: TaskResult[], fields: Partial<RunReport> = {}): RunReport {
  return {
    version: 1,
    dryRun: false,
    region: "us-east-1",
    table: "acme-widgets-ci-table",
    results,
    calls: { "DynamoDB.GetItem": 3 },
    writeCalls: 0,
    exitCode: results.some((r) => r.error) ? 1 : 0,
    ...fields,
  };
}

/** The table rows of a summary (header and separator left out). */
function rows(markdown: string): string[][] {
  return markdown.split("\n").filter((l) => l.startsWith("| ")).slice(2)
    .map((l) => l.slice(2, -2).split(/ (?<!\\)\| /));
}

/** Runs the entry in-process as inside GitHub Actions, with a fresh summary file. */
async function runInActions(args: string[], env: Record<string, string> = {}) {
  const dir = await Deno.makeTempDir();
  const summaryPath = `${dir}/summary.md`;
  await Deno.writeTextFile(summaryPath, "# earlier step\n");
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await main(args, {
    ...AWS_ENV,
    GITHUB_ACTIONS: "true",
    GITHUB_STEP_SUMMARY: summaryPath,
    GITHUB_TOKEN: TEST_PAT,
    ...env,
  }, {
    stdout: (t) => stdout.push(t),
    stderr: (t) => stderr.push(t),
    readTextFile: (path) => Deno.readTextFileSync(path),
  });
  const summary = await Deno.readTextFile(summaryPath);
  await Deno.remove(dir, { recursive: true });
  return { code, stdout: stdout.join("\n"), stderr, summary };
}

/**
 * A stand-in for DynamoDB and EC2 that denies every call, as AWS does for a role missing a
 * permission (DynamoDB in JSON, EC2 in its query protocol's XML).
 */
function denyingAws() {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const target = req.headers.get("x-amz-target")?.split(".")[1];
    await req.body?.cancel();
    if (!target) {
      return new Response(
        "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not " +
          "authorized to perform this operation.</Message></Error></Errors>" +
          "<RequestID>1</RequestID></Response>",
        { status: 403, headers: { "content-type": "text/xml" } },
      );
    }
    return Response.json({
      __type: "com.amazon.coral.service#AccessDeniedException",
      message:
        `User: arn:aws:sts::123456789012:assumed-role/refresh/ci is not authorized to perform: dynamodb:${target}`,
    }, { status: 400, headers: { "content-type": "application/x-amz-json-1.0" } });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

Deno.test("escapeData encodes percent signs and line breaks so one command stays one line", () => {
  assert.equal(escapeData("50% done\r\nnext"), "50%25 done%0D%0Anext");
  assert.equal(addMask("a\nb"), "::add-mask::a%0Ab");
});

Deno.test("annotation escapes colons and commas in the title only", () => {
  assert.equal(
    annotation("error", "refresh: table, pools", "a: b, c"),
    "::error title=refresh%3A table%2C pools::a: b, c",
  );
});

Deno.test("annotations gives an error per failed task and a warning per warning", () => {
  const lines = annotations(report([
    result("table", { status: "failed", error: "AccessDeniedException: no\nmore" }),
    result("parameters", { warnings: ["subnet gone", "second"] }),
  ]));
  assert.deepEqual(lines, [
    "::error title=refresh table failed::AccessDeniedException: no%0Amore",
    "::warning title=refresh parameters::subnet gone",
    "::warning title=refresh parameters::second",
  ]);
});

Deno.test("jobSummary renders one row per task with found values and changes", () => {
  const md = jobSummary(report([
    result("table", {
      status: "changed",
      found: { status: "missing" },
      changes: [{ action: "create", target: "table acme-widgets-ci-table" }],
    }),
    result("parameters", { found: { idle_time_sec: 300, subnet_ids: ["a", "b"] } }),
  ], { writeCalls: 2 }));
  assert.deepEqual(rows(md), [
    ["table", "🔧 changed", "status: missing", "create table acme-widgets-ci-table"],
    ["parameters", "✅ no changes", "idle_time_sec: 300<br>subnet_ids: 2", "none"],
  ]);
  assert.match(md, /^## refresh: 🔧 1 changes made$/m);
  assert.match(md, /^3 API calls, 2 writes\. Exit code 0\.$/m);
});

Deno.test("jobSummary shows counts nested in found without knowing their names", () => {
  const md = jobSummary(report([
    result("reaper", {
      found: { expired: 2, counts: { locked: 1, skipped: 1 }, instances: [{ id: "i-1" }] },
    }),
  ]));
  assert.equal(
    rows(md)[0][2],
    "expired: 2<br>counts.locked: 1<br>counts.skipped: 1<br>instances: 1",
  );
  assert.deepEqual(describeFound({ token: null, ok: true }), ["token: none", "ok: true"]);
});

Deno.test("jobSummary shows the reaper's pool view as a table of its own, one row per class", () => {
  const cls = (idle: number, outdated: number, deferred: number, oldestAgeMin: number | null) => ({
    idle,
    claimed: 1,
    running: 2,
    created: 0,
    current: idle + 3 - outdated,
    outdated,
    unknownVersion: 0,
    unhealthy: 1,
    booting: 0,
    deferred,
    oldestLaunch: null,
    oldestAgeMin,
  });
  const md = jobSummary(report([
    result("reaper", {
      found: {
        expired: 0,
        pool: {
          template: { id: "lt-0123456789abcdef0", version: 2, ami: "ami-22222222" },
          classes: { large: cls(4, 3, 2, 75), "c5|odd": cls(1, 0, 0, null) },
        },
      },
    }),
  ]));
  const [task, ...pool] = rows(md);
  assert.equal(task[2], "expired: 0", "the pool is not flattened into the Found cell");
  assert.match(md, /^### Pool \(reaper\)$/m);
  assert.match(
    md,
    /^Against the launch template lt-0123456789abcdef0 default version 2 \(ami-22222222\)\.$/m,
  );
  assert.match(
    md,
    /^\| class \| idle \| claimed \| running \| created \| current \| outdated \| unknown \| unhealthy \| booting \| oldest \|$/m,
  );
  assert.deepEqual(pool.slice(2), [
    ["large", "4", "1", "2", "0", "4", "3 (2 left)", "0", "1", "0", "75 min"],
    ["c5\\|odd", "1", "1", "2", "0", "4", "0", "0", "1", "0", "-"],
  ]);
});

Deno.test("jobSummary says would under dry-run and caps the changes listed in a cell", () => {
  const changes = Array.from({ length: 7 }, (_, i) => ({ action: "delete", target: `q${i}` }));
  const md = jobSummary(report([result("resource-pools", { status: "planned", changes })], {
    dryRun: true,
  }));
  const [row] = rows(md);
  assert.equal(
    row[3],
    "would delete q0<br>would delete q1<br>would delete q2<br>would delete q3<br>would delete q4<br>… 2 more",
  );
  assert.match(md, /^- resource-pools: would delete q6$/m);
  assert.match(md, /7 changes planned \(dry run, nothing written\)/);
});

Deno.test("jobSummary escapes pipes and HTML so a value cannot break the table", () => {
  const md = jobSummary(report([
    result("table", { status: "failed", summary: "failed", error: "bad | <script>" }),
  ]));
  assert.deepEqual(rows(md)[0], ["table", "❌ failed", "failed", "none"]);
  assert.match(md, /^- table: ❌ bad \| &lt;script&gt;$/m);
  assert.match(md, /^## refresh: ❌ 1 of 1 tasks failed$/m);
});

Deno.test("actionsOutput masks a secret at the moment it is registered", () => {
  const lines: string[] = [];
  const io = { stdout: () => {}, stderr: (t: string) => lines.push(t), readTextFile: () => "" };
  const redactor = new Redactor();
  const gha = actionsOutput({ GITHUB_ACTIONS: "true" }, io, redactor);
  gha.secret("AABBCCDDEEFFGGHHIIJJ0123456789");
  assert.deepEqual(lines, ["::add-mask::AABBCCDDEEFFGGHHIIJJ0123456789"]);
  gha.secret("AABBCCDDEEFFGGHHIIJJ0123456789");
  assert.equal(lines.length, 1);
  gha.secret(
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1\nzzzzzzzzzz\n-----END RSA PRIVATE KEY-----",
  );
  assert.ok(lines.includes("::add-mask::MIIEpAIBAAKCAQEA1"), lines.join("\n"));
  assert.ok(lines.includes("::add-mask::zzzzzzzzzz"));
  assert.equal(redactor.redact("x AABBCCDDEEFFGGHHIIJJ0123456789 y"), "x *** y");
});

Deno.test("refresh writes the job summary, groups and masks when GITHUB_ACTIONS is true", async () => {
  const network = await resetMoto();
  const run = await runInActions([...baseArgs(network), ...ONLY]);
  assert.equal(run.code, 0, run.stderr.join("\n"));
  assert.equal(run.stderr[0], `::add-mask::${TEST_PAT}`);
  const markers = run.stderr.filter((l) => /^::(end)?group::/.test(l));
  assert.deepEqual(markers, [
    "::group::refresh table",
    "::endgroup::",
    "::group::refresh parameters",
    "::endgroup::",
  ]);
  assert.ok(run.summary.startsWith("# earlier step\n## refresh: "), "summary is appended");
  const table = rows(run.summary);
  assert.deepEqual(table.map((r) => [r[0], r[1]]), [
    ["table", "🔧 changed"],
    ["parameters", "🔧 changed"],
  ]);
  assert.match(table[1][2], /idle_time_sec: none/);
  assert.match(table[1][3], /write metadata idle_time_sec/);
  assert.match(run.summary, /Exit code 0\./);
  for (const text of [run.summary, run.stdout, ...run.stderr.slice(1)]) {
    assert.ok(!text.includes(TEST_PAT), "the PAT appears only in its add-mask line");
  }

  const second = await runInActions([...baseArgs(network), ...ONLY]);
  assert.equal(second.code, 0);
  assert.match(second.summary, /^## refresh: ✅ no changes$/m);
  assert.match(second.summary, / 0 writes\./);
  assert.deepEqual(rows(second.summary).map((r) => [r[1], r[3]]), [
    ["✅ no changes", "none"],
    ["✅ no changes", "none"],
  ]);
});

Deno.test("refresh masks a registration token before any line that could carry it", async () => {
  const network = await resetMoto();
  const gh = startFakeGithub({ tokens: [TEST_PAT] });
  try {
    const args = [...baseArgs(network), "--only", "table,github-token", "--github-api-url", gh.url];
    const run = await runInActions(args);
    assert.equal(run.code, 0, run.stderr.join("\n"));
    assert.equal(gh.issued.length, 1);
    const token = gh.issued[0];
    const mask = run.stderr.indexOf(`::add-mask::${token}`);
    assert.ok(mask > 0, "the fetched token is masked");
    const groups = run.stderr.indexOf("::group::refresh github-token");
    assert.ok(mask < groups, "masked while its task runs, before its lines are printed");
    for (const text of [run.summary, run.stdout, ...run.stderr.filter((_, i) => i !== mask)]) {
      assert.ok(!text.includes(token), "the token appears only in its add-mask line");
    }
    assert.deepEqual(rows(run.summary).map((r) => [r[0], r[1]]), [
      ["table", "🔧 changed"],
      ["github-token", "🔧 changed"],
    ]);
  } finally {
    await gh.close();
  }
});

Deno.test("refresh annotates each failed task with an error and exits 1", async () => {
  const aws = denyingAws();
  try {
    const run = await runInActions([...BASE_ARGS, ...ONLY], { AWS_ENDPOINT_URL: aws.url });
    assert.equal(run.code, 1);
    const errors = run.stderr.filter((l) => l.startsWith("::error"));
    assert.equal(errors.length, 2, run.stderr.join("\n"));
    assert.match(
      errors[0],
      /^::error title=refresh table failed::AccessDeniedException: .*dynamodb:DescribeTable$/,
    );
    assert.match(errors[1], /^::error title=refresh parameters failed::UnauthorizedOperation: /);
    assert.deepEqual(rows(run.summary).map((r) => [r[0], r[1]]), [
      ["table", "❌ failed"],
      ["parameters", "❌ failed"],
    ]);
    assert.match(run.summary, /^- table: ❌ AccessDeniedException: .*not authorized/m);
    assert.match(run.summary, /Exit code 1\./);
  } finally {
    await aws.close();
  }
});

Deno.test("refresh annotates an invalid desired state and summarizes it, exit 2", async () => {
  const run = await runInActions(["--region", "mars-1", "--repo", "acme/widgets", ...ONLY]);
  assert.equal(run.code, 2);
  const error = run.stderr.find((l) => l.startsWith("::error"));
  assert.ok(error, run.stderr.join("\n"));
  assert.match(error, /^::error title=refresh%3A invalid desired state::subnet-ids: required by/);
  assert.match(error, /%0Aregion: "mars-1" is not an AWS region name/);
  assert.match(run.summary, /^## refresh: ❌ invalid desired state, nothing was called$/m);
  assert.match(run.summary, /^- subnet-ids: required by task parameters/m);
});

Deno.test("refresh prints no workflow commands and writes no summary outside GitHub Actions", async () => {
  const network = await resetMoto();
  const run = await runInActions([...baseArgs(network), ...ONLY], { GITHUB_ACTIONS: "" });
  assert.equal(run.code, 0);
  assert.deepEqual(run.stderr.filter((l) => l.startsWith("::")), []);
  assert.equal(run.summary, "# earlier step\n");
});

Deno.test("jobSummary and annotations say which tasks the deadline skipped", () => {
  const skipped = result("reaper", {
    status: "skipped",
    summary: "skipped, the run's deadline had passed",
    error: "not started: the run's 10 min deadline had passed (--deadline-min)",
  });
  const r = report([result("table"), skipped], { exitCode: 1 });
  const md = jobSummary(r);
  assert.match(md, /^## refresh: ❌ 1 of 2 tasks skipped \(the run's deadline passed\)$/m);
  assert.deepEqual(rows(md)[1].slice(0, 2), ["reaper", "⏭️ skipped (deadline)"]);
  assert.deepEqual(annotations(r), [
    annotation("error", "refresh reaper skipped", skipped.error!),
  ]);
});

Deno.test("the job summary names the endpoint that did not answer when tasks were skipped for it", () => {
  const summary = jobSummary({
    version: 1,
    dryRun: false,
    region: "us-east-1",
    table: "t",
    results: [
      {
        task: "table",
        status: "failed",
        summary: "failed",
        found: {},
        changes: [],
        warnings: [],
        error: "DynamoDB.DescribeTable got no answer",
        durationMs: 1,
      },
      {
        task: "parameters",
        status: "skipped",
        summary: "skipped, http://127.0.0.1:9 did not answer earlier in this run",
        found: {},
        changes: [],
        warnings: [],
        error: "DynamoDB.GetItem not sent: http://127.0.0.1:9 did not answer",
        durationMs: 0,
      },
    ],
    calls: {},
    writeCalls: 0,
    unreachable: [{
      endpoint: "http://127.0.0.1:9",
      call: "DynamoDB.DescribeTable",
      timeoutMs: 1000,
      attempts: 5,
    }],
    exitCode: 1,
  });
  assert.match(
    summary,
    /^## refresh: ❌ 1 of 2 tasks failed, 1 of 2 tasks skipped \(http:\/\/127\.0\.0\.1:9 did not answer\)$/m,
  );
  assert.match(summary, /^\| parameters \| ⏭️ skipped \(no answer\) \|/m);
});

Deno.test("jobSummary shows the warm pool as a table of its own, one row per class", () => {
  const md = jobSummary(report([
    result("warm-pool", {
      status: "changed",
      summary: "1 launched",
      found: {
        warm: {
          schedule: null,
          inSchedule: true,
          classes: {
            large: {
              resourceClass: "large",
              usageClass: "on-demand",
              minimum: 2,
              ready: 1,
              booting: 0,
              launched: 1,
              outdated: 0,
              unhealthy: 0,
              extra: 0,
              instanceHoursPerDay: 48,
              interrupted: 0,
              fellBack: null,
              capacityShort: false,
              belowMinimum: false,
            },
          },
        },
      },
      changes: [{ action: "launch", target: "1 large instance" }],
    }),
  ]));
  assert.match(md, /^### Warm pool \(warm-pool\)$/m);
  assert.match(md, /^Warm pool, always kept\.$/m);
  assert.match(
    md,
    /^\| class \| usage \| minimum \| ready \| booting \| launched \| outdated \| interrupted \| h\/day \|$/m,
  );
  assert.match(md, /^\| large \| on-demand \| 2 \| 1 \| 0 \| 1 \| 0 \| 0 \| 48 \|$/m);
  // The task's row does not flatten the view into its Found cell.
  assert.deepEqual(rows(md)[0].slice(0, 3), ["warm-pool", "🔧 changed", "1 launched"]);
});
