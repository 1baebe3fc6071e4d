/**
 * refresh run whole through the fault-injecting proxy: it converges through injected faults, a
 * stalled call fails its task within the request timeout instead of hanging the run, and the run's
 * deadline stops new tasks.
 */
import assert from "node:assert/strict";
import { TASKS } from "../lib/config.ts";
import type { RunReport } from "../lib/report.ts";
import { baseArgs, PINNED_RUNNER_ARGS, TEST_PAT } from "./support/aws.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { sha256 } from "../lib/contract.ts";
import { packageName } from "../lib/runner_release.ts";
import { DEFAULT_RUNNER_VERSION } from "../lib/user_data.ts";
import { startFakeGithub } from "./support/github.ts";
import { MOTO_URL, resetMoto } from "./support/moto.ts";
import { refreshJson } from "./support/pool.ts";
import { runRefresh } from "./support/process.ts";
import { awsCallBudgetMs } from "../lib/requests.ts";

Deno.test("refresh converges through 20% injected faults within a few runs, then writes nothing", async () => {
  const network = await resetMoto();
  // The runner's release too, so the generated bootstrap's checksum look-up meets faults as well.
  await using gh = startFakeGithub({
    tokens: [TEST_PAT],
    releases: [{
      repository: "actions/runner",
      tag_name: `v${DEFAULT_RUNNER_VERSION}`,
      assets: (["x64", "arm64"] as const).map((arch) => ({
        name: packageName(arch, DEFAULT_RUNNER_VERSION),
        digest: `sha256:${sha256(arch)}`,
      })),
    }],
  });
  // Throttling, 500s, dropped connections and lost replies on AWS and GitHub alike; a seed per
  // proxy, so a failure replays (the faults are listed in the assertion message).
  await using aws = startFaultProxy({ target: MOTO_URL, seed: 12, rate: 0.2 });
  await using github = startFaultProxy({ target: gh.url, seed: 12, rate: 0.2 });
  // And the reply of each first create lost: the SDK's retry then finds the thing made.
  for (
    const op of [
      "DynamoDB.CreateTable",
      "EC2.CreateLaunchTemplate",
      "SQS.CreateQueue",
      "DynamoDB.PutItem",
      "DynamoDB.UpdateItem",
    ]
  ) aws.inject(op, "lose-reply");
  github.inject(/registration-token$/, "lose-reply");
  const args = [...baseArgs(network), "--github-api-url", github.url, "--root-volume-size", "30"];
  const env = { AWS_ENDPOINT_URL: aws.url };
  const statuses: string[][] = [];
  let converged = false;
  for (let run = 0; run < 4 && !converged; run++) {
    const { code, report } = await refreshJson(args, env);
    statuses.push(
      report.results.map((r) => `${r.task}:${r.status}${r.error ? ` (${r.error})` : ""}`),
    );
    converged = code === 0;
  }
  const story = () =>
    `${JSON.stringify(statuses, null, 1)}\n${aws.describe()}\n${github.describe()}`;
  assert.ok(converged, `no clean run within 4 runs:\n${story()}`);
  assert.ok(aws.injected().length >= 5, `too few faults to prove anything:\n${story()}`);

  // Without faults, the state is complete: nothing to write.
  aws.rate = 0;
  github.rate = 0;
  const { code, report } = await refreshJson(args, env);
  assert.equal(code, 0, story());
  assert.deepEqual(report.results.map((r) => r.status), TASKS.map(() => "unchanged"), story());
  assert.equal(report.writeCalls, 0, story());
});

Deno.test("refresh fails a stalled call within its request timeout, and still runs and reports every task", async () => {
  const network = await resetMoto();
  await using aws = startFaultProxy({
    target: MOTO_URL,
    only: /^EC2\.DescribeSubnets$/,
    rate: 1,
    faults: ["stall"],
  });
  const started = performance.now();
  const result = await runRefresh(
    [
      ...baseArgs(network),
      "--only",
      "table,parameters,reaper",
      "--request-timeout-sec",
      "1",
      "--json",
    ],
    { AWS_ENDPOINT_URL: aws.url },
  );
  const elapsed = performance.now() - started;
  assert.equal(result.code, 1, result.stderr);
  const report: RunReport = JSON.parse(result.stdout);
  assert.deepEqual(report.results.map((r) => [r.task, r.status]), [
    ["table", "changed"],
    ["parameters", "failed"],
    ["reaper", "unchanged"],
  ]);
  assert.match(
    report.results[1].error!,
    /EC2\.DescribeSubnets got no answer from http:\/\/127\.0\.0\.1:\d+ within 1 s \(5 attempts; --request-timeout-sec\)/,
  );
  // Five attempts (the error says so). The proxy may see one more request: with other calls on
  // the same keep-alive connections (tasks run side by side), Deno's HTTP client can resend an
  // attempt's request on a fresh connection, within that attempt's time.
  const stalls = aws.injected().length;
  assert.ok(stalls === 5 || stalls === 6, aws.describe());
  // Five attempts of 1 s, their backoffs and a process start: not the stall, which never ends.
  assert.ok(elapsed < 20_000, `took ${Math.round(elapsed)} ms`);
});

Deno.test("refresh ends one call's budget after an endpoint goes silent, names it, and skips the work that needs it", async () => {
  const network = await resetMoto();
  // EC2 accepts connections and never answers; DynamoDB and SQS (moto itself) answer.
  await using silent = startFaultProxy({ target: MOTO_URL, rate: 1, faults: ["stall"] });
  const endpoint = new URL(silent.url).origin;
  const started = performance.now();
  const { code, report, stderr } = await refreshJson(
    [
      ...baseArgs(network),
      "--only",
      "table,launch-template,resource-pools,parameters,reaper",
      ...PINNED_RUNNER_ARGS,
      "--request-timeout-sec",
      "1",
    ],
    { AWS_ENDPOINT_URL: MOTO_URL, AWS_ENDPOINT_URL_EC2: silent.url },
  );
  const elapsed = performance.now() - started;
  assert.equal(code, 1, stderr);
  const status = Object.fromEntries(report.results.map((r) => [r.task, r]));
  // The tasks that need no EC2 converge.
  assert.equal(status["table"].status, "changed");
  assert.equal(status["resource-pools"].status, "changed");
  // One EC2 call timed out on its 5 attempts; every other task that needed EC2 was skipped, naming
  // the endpoint and that call.
  const ec2Tasks = ["launch-template", "parameters", "reaper"].map((t) => status[t]);
  const timedOut = ec2Tasks.filter((r) => r.status === "failed");
  assert.equal(timedOut.length, 1, JSON.stringify(ec2Tasks, null, 2));
  assert.match(
    timedOut[0].error!,
    new RegExp(`got no answer from ${endpoint} within 1 s \\(5 attempts`),
  );
  for (const r of ec2Tasks.filter((r) => r !== timedOut[0])) {
    assert.equal(r.status, "skipped", JSON.stringify(r));
    assert.equal(r.summary, `skipped, ${endpoint} did not answer earlier in this run`);
  }
  assert.equal(report.unreachable?.length, 1);
  assert.equal(report.unreachable![0].endpoint, endpoint);
  // Each EC2 call in flight when it timed out was cut short: about one call's attempts reached
  // the silent endpoint, not one call's worth per task.
  assert.ok(silent.requests.length <= 3 * 5, silent.describe());
  // One call's budget (5 attempts of 1 s and the backoffs between them), not one per task.
  assert.ok(elapsed < awsCallBudgetMs(1_000) + 3_000, `took ${Math.round(elapsed)} ms`);
});

Deno.test("refresh starts no task after its deadline, reports the rest as skipped and exits 1", async () => {
  const network = await resetMoto();
  // The monotonic clock moves 4 minutes each time it is read: the budget is made at 0, the first
  // task starts at 4 min and the second at 8, both within the 10 min deadline; the third at 12.
  let t = -4 * 60_000;
  const clock = () => (t += 4 * 60_000);
  const { code, report, stderr } = await refreshJson(
    [...baseArgs(network), "--only", "table,parameters,github-token,reaper"],
    { GITHUB_API_URL: "http://127.0.0.1:9" },
    clock,
  );
  assert.equal(code, 1);
  assert.equal(report.exitCode, 1);
  assert.deepEqual(report.results.map((r) => [r.task, r.status]), [
    ["table", "changed"],
    ["parameters", "changed"],
    ["github-token", "skipped"],
    ["reaper", "skipped"],
  ]);
  assert.equal(
    report.results[2].error,
    "not started: the run's 10 min deadline had passed (--deadline-min); the next run does it",
  );
  assert.match(stderr, /warning: github-token: not started: the run's 10 min deadline/);
  // The skipped tasks made no call (GitHub's address would refuse one).
  assert.deepEqual(Object.keys(report.calls).filter((c) => c.startsWith("GitHub")), []);
});
