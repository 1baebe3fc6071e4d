import assert from "node:assert/strict";
import {
  DescribeInstancesCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { ListQueuesCommand } from "npm:@aws-sdk/client-sqs@3.1169.0";
import { ListTablesCommand } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { CallCounter } from "../lib/calls.ts";
import { reconcileGithubToken } from "../lib/github_token.ts";
import { readMetadata } from "../lib/metadata.ts";
import { reconcileParameters } from "../lib/parameters.ts";
import { reconcileTable } from "../lib/table.ts";
import { runTasks } from "../lib/task.ts";
import {
  AWS_MAX_ATTEMPTS,
  awsCallBudgetMs,
  ENDPOINT_DOWN,
  EndpointBreaker,
  githubCallBudgetMs,
  timedFetch,
} from "../lib/requests.ts";
import { buildClients } from "../refresh.ts";
import { desiredFrom, TEST_PAT, testContext } from "./support/aws.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { startFakeGithub } from "./support/github.ts";
import { AWS_ENV, MOTO_URL, resetMoto } from "./support/moto.ts";

const TOKEN_REQUEST = "GitHub.POST /repos/acme/widgets/actions/runners/registration-token";

Deno.test("AWS clients give up on a stalled endpoint after their attempts each time out", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({ target: MOTO_URL, rate: 1, faults: ["stall"] });
  const { ec2 } = buildClients(
    desiredFrom([]),
    { ...AWS_ENV, AWS_ENDPOINT_URL: proxy.url },
    new CallCounter(),
    { timeoutMs: 300 },
  );
  const started = performance.now();
  const error = await ec2.send(new DescribeInstancesCommand({})).then(
    () => assert.fail("a stalled call succeeded"),
    (e: Error) => e,
  );
  const elapsed = performance.now() - started;
  ec2.destroy();
  assert.equal(error.name, "TimeoutError");
  assert.match(
    error.message,
    /^EC2\.DescribeInstances got no answer from http:\/\/127\.0\.0\.1:\d+ within 300 ms \(5 attempts; --request-timeout-sec\); check that the AWS endpoint is reachable from here$/,
  );
  assert.deepEqual(proxy.requests.map((r) => r.fault), Array(5).fill("stall"));
  // Five attempts of 300 ms and the SDK's short backoffs, not the stall (which never ends).
  assert.ok(elapsed >= 1_500 && elapsed < 8_000, `took ${Math.round(elapsed)} ms`);
});

Deno.test("AWS clients retry a stalled attempt and carry on when the next one is answered", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({ target: MOTO_URL });
  proxy.inject("EC2.DescribeInstances", "stall", { times: 2 });
  const { ec2 } = buildClients(
    desiredFrom([]),
    { ...AWS_ENV, AWS_ENDPOINT_URL: proxy.url },
    new CallCounter(),
    { timeoutMs: 300 },
  );
  const out = await ec2.send(new DescribeInstancesCommand({}));
  ec2.destroy();
  assert.deepEqual(out.Reservations, []);
  assert.deepEqual(proxy.requests.map((r) => r.fault ?? "answered"), [
    "stall",
    "stall",
    "answered",
  ]);
});

Deno.test("the github-token task fails with a clear message when GitHub never answers the token request, and the run goes on", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  await using proxy = startFaultProxy({ target: gh.url, rate: 1, faults: ["stall"] });
  const ctx = await testContext(["--only", "table,github-token", "--github-api-url", proxy.url], {
    limits: { timeoutMs: 300, retryBaseMs: 10 },
  });
  const started = performance.now();
  const results = await runTasks([
    ["table", reconcileTable],
    ["github-token", reconcileGithubToken],
    ["parameters", reconcileParameters],
  ], ctx);
  const elapsed = performance.now() - started;
  assert.deepEqual(results.map((r) => [r.task, r.status]), [
    ["table", "changed"],
    ["github-token", "failed"],
    ["parameters", "changed"],
  ]);
  assert.equal(
    results[1].error,
    `cannot reach GitHub at ${proxy.url} (POST /repos/acme/widgets/actions/runners/registration-token): ` +
      `POST ${proxy.url}/repos/acme/widgets/actions/runners/registration-token got no answer ` +
      "within 300 ms (--request-timeout-sec); check --github-api-url and the network",
  );
  // The first attempt and plugin-retry's three retries, each stalled.
  assert.deepEqual(
    proxy.requests.map((r) => `${r.operation}: ${r.fault}`),
    Array(4).fill(`${TOKEN_REQUEST}: stall`),
  );
  assert.ok(elapsed < 5_000, `took ${Math.round(elapsed)} ms`);
});

Deno.test("timedFetch aborts an attempt that gets no answer and names the request", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  await using proxy = startFaultProxy({ target: gh.url, rate: 1, faults: ["stall"] });
  const started = performance.now();
  const error = await timedFetch(200)(`${proxy.url}/repos/acme/widgets?x=1`, { method: "POST" })
    .then(() => assert.fail("a stalled request succeeded"), (e: Error) => e);
  assert.ok(performance.now() - started < 2_000);
  assert.equal(
    error.message,
    `POST ${
      new URL(proxy.url).origin
    }/repos/acme/widgets got no answer within 200 ms (--request-timeout-sec)`,
  );
});

Deno.test("timedFetch leaves an answered request alone", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const response = await timedFetch(2_000)(`${gh.url}/nowhere`, {
    headers: { authorization: `token ${TEST_PAT}` },
  });
  assert.equal(response.status, 404);
  await response.body?.cancel();
});

Deno.test("timedFetch turns an answer that breaks off into an error naming the request", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  await using proxy = startFaultProxy({ target: gh.url });
  proxy.inject(/registration-token$/, "lose-reply");
  const error = await timedFetch(2_000)(
    `${proxy.url}/repos/acme/widgets/actions/runners/registration-token`,
    { method: "POST", headers: { authorization: `token ${TEST_PAT}` } },
  ).then(() => assert.fail("a broken answer was taken"), (e: Error) => e);
  assert.match(
    error.message,
    /^POST http:\/\/127\.0\.0\.1:\d+\/repos\/acme\/widgets\/actions\/runners\/registration-token: the answer broke off/,
  );
});

Deno.test("the github-token task retries a GitHub answer that broke off and stores the token", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  await using proxy = startFaultProxy({ target: gh.url });
  const ctx = await testContext(["--only", "table,github-token", "--github-api-url", proxy.url], {
    limits: { timeoutMs: 2_000, retryBaseMs: 10 },
  });
  proxy.inject(/registration-token$/, "lose-reply");
  const [table, token] = await runTasks([
    ["table", reconcileTable],
    ["github-token", reconcileGithubToken],
  ], ctx);
  assert.equal(table.status, "changed");
  assert.equal(token.status, "changed", token.error);
  assert.deepEqual(proxy.requests.map((r) => r.fault ?? "answered"), ["lose-reply", "answered"]);
  // GitHub made two tokens; the one stored is the one whose answer arrived.
  assert.equal(gh.issued.length, 2);
  const stored = await readMetadata(ctx.clients.ddb, ctx.desired.table, "gh_registration_token");
  assert.equal((stored as { token: string }).token, gh.issued[1]);
});

/** An error a promise rejects with, and how long it took (ms). */
async function failure(promise: Promise<unknown>): Promise<{ error: Error; ms: number }> {
  const started = performance.now();
  const error = await promise.then(
    () => assert.fail("a call to a silent endpoint succeeded"),
    (e: Error) => e,
  );
  return { error, ms: performance.now() - started };
}

Deno.test("an AWS endpoint that timed out on every attempt of a call fails later calls at once, naming it; other endpoints still answer", async () => {
  await resetMoto();
  await using silent = startFaultProxy({ target: MOTO_URL, rate: 1, faults: ["stall"] });
  const breaker = new EndpointBreaker();
  const { ec2, sqs, ddb } = buildClients(
    desiredFrom([]),
    { ...AWS_ENV, AWS_ENDPOINT_URL: MOTO_URL, AWS_ENDPOINT_URL_EC2: silent.url },
    new CallCounter(),
    { timeoutMs: 300 },
    breaker,
  );
  const endpoint = new URL(silent.url).origin;
  const first = await failure(ec2.send(new DescribeInstancesCommand({})));
  assert.equal(first.error.name, "TimeoutError");
  assert.ok(first.error.message.includes(`from ${endpoint} within 300 ms`), first.error.message);
  assert.equal(silent.requests.length, AWS_MAX_ATTEMPTS);

  const later = await failure(ec2.send(new DescribeSubnetsCommand({})));
  assert.ok(later.ms < 200, `a call to the down endpoint took ${Math.round(later.ms)} ms`);
  assert.equal(later.error.name, ENDPOINT_DOWN);
  assert.equal(
    later.error.message,
    `EC2.DescribeSubnets not sent: ${endpoint} did not answer EC2.DescribeInstances within 300 ms ` +
      "on any of 5 attempts earlier in this run (--request-timeout-sec); check that the endpoint " +
      "is reachable from here",
  );
  assert.equal(silent.requests.length, AWS_MAX_ATTEMPTS, "nothing more was sent to it");
  assert.deepEqual(breaker.failures(), [
    { endpoint, call: "EC2.DescribeInstances", timeoutMs: 300, attempts: 5 },
  ]);
  // SQS and DynamoDB have their own endpoint, which answers.
  assert.ok(Array.isArray((await sqs.send(new ListQueuesCommand({}))).QueueUrls ?? []));
  assert.ok(Array.isArray((await ddb.send(new ListTablesCommand({}))).TableNames));
  ec2.destroy();
  sqs.destroy();
  ddb.destroy();
});

Deno.test("a call in flight to an endpoint when it is marked down fails then, not after its own attempts", async () => {
  await resetMoto();
  await using silent = startFaultProxy({ target: MOTO_URL, rate: 1, faults: ["stall"] });
  const { ec2 } = buildClients(
    desiredFrom([]),
    { ...AWS_ENV, AWS_ENDPOINT_URL: silent.url },
    new CallCounter(),
    { timeoutMs: 400 },
  );
  const first = failure(ec2.send(new DescribeInstancesCommand({})));
  await new Promise((resolve) => setTimeout(resolve, 900)); // the second starts 2 attempts later
  const second = failure(ec2.send(new DescribeVpcsCommand({})));
  const [a, b] = await Promise.all([first, second]);
  assert.equal(a.error.name, "TimeoutError");
  assert.equal(b.error.name, ENDPOINT_DOWN);
  assert.match(
    b.error.message,
    /^EC2\.DescribeVpcs not sent: .* did not answer EC2\.DescribeInstances/,
  );
  // It ended with the first call, about 900 ms after its start, not after its own five attempts.
  assert.ok(b.ms < a.ms - 500, `first ${Math.round(a.ms)} ms, second ${Math.round(b.ms)} ms`);
  ec2.destroy();
});

Deno.test("a GitHub endpoint that timed out on every attempt of a call fails later calls at once, without retries", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  await using silent = startFaultProxy({ target: gh.url, rate: 1, faults: ["stall"] });
  const breaker = new EndpointBreaker();
  const { github } = buildClients(
    desiredFrom(["--github-api-url", silent.url]),
    { ...AWS_ENV, GITHUB_TOKEN: TEST_PAT },
    new CallCounter(),
    { timeoutMs: 200, retryBaseMs: 10 },
    breaker,
  );
  const first = await failure(
    github!.request("GET /repos/{owner}/{repo}", { owner: "acme", repo: "widgets" }),
  );
  assert.match(first.error.message, /got no answer within 200 ms/);
  assert.equal(silent.requests.length, 4, "the first attempt and plugin-retry's three retries");
  const later = await failure(
    github!.request("POST /repos/acme/widgets/actions/runners/registration-token"),
  );
  assert.ok(later.ms < 200, `took ${Math.round(later.ms)} ms`);
  assert.equal(
    later.error.message,
    `GitHub POST /repos/acme/widgets/actions/runners/registration-token not sent: ${
      new URL(silent.url).origin
    } did not answer GitHub GET /repos/{owner}/{repo} within 200 ms on any of 4 attempts earlier ` +
      "in this run (--request-timeout-sec); check that the endpoint is reachable from here",
  );
  assert.equal(silent.requests.length, 4, "nothing more was sent to it");
});

Deno.test("with the default settings, a silent endpoint costs at most about two minutes", async () => {
  const desired = desiredFrom([]);
  const timeoutMs = desired.requestTimeoutSec * 1000;
  assert.equal(timeoutMs, 20_000);
  // AWS: 5 attempts of 20 s and the SDK's backoffs (at most 0.2 + 0.4 + 0.8 + 1.6 s).
  assert.equal(awsCallBudgetMs(timeoutMs), 103_000);
  // GitHub: 4 attempts of 20 s and plugin-retry's waits (1 + 4 + 9 s).
  assert.equal(githubCallBudgetMs(timeoutMs), 94_000);
  // And the clients the entry builds use those settings.
  const { ec2 } = buildClients(desired, AWS_ENV, new CallCounter());
  assert.equal(await ec2.config.maxAttempts(), AWS_MAX_ATTEMPTS);
  const handler = ec2.config.requestHandler as unknown as {
    configProvider: Promise<{ requestTimeout?: number; throwOnRequestTimeout?: boolean }>;
  };
  const config = await handler.configProvider;
  assert.equal(config.requestTimeout, timeoutMs);
  assert.equal(config.throwOnRequestTimeout, true);
  ec2.destroy();
});
