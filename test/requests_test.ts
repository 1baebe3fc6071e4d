import assert from "node:assert/strict";
import { DescribeInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { CallCounter } from "../lib/calls.ts";
import { reconcileGithubToken } from "../lib/github_token.ts";
import { readMetadata } from "../lib/metadata.ts";
import { reconcileParameters } from "../lib/parameters.ts";
import { reconcileTable } from "../lib/table.ts";
import { runTasks } from "../lib/task.ts";
import { timedFetch } from "../lib/requests.ts";
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
    /^EC2\.DescribeInstances got no answer within 300 ms \(5 attempts; --request-timeout-sec\); check that the AWS endpoint is reachable from here$/,
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
