import assert from "node:assert/strict";
import { DescribeTableCommand, DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { DescribeInstancesCommand, EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { CreateQueueCommand, ListQueuesCommand, SQSClient } from "npm:@aws-sdk/client-sqs@3.1169.0";
import { Octokit } from "npm:@octokit/rest@22.0.1";
import { retry } from "npm:@octokit/plugin-retry@8.1.1";
import { throttling } from "npm:@octokit/plugin-throttling@11.0.5";
import { type FaultProxy, startFaultProxy } from "./support/fault_proxy.ts";
import { startFakeGithub } from "./support/github.ts";
import { AWS_ENV, MOTO_URL, resetMoto } from "./support/moto.ts";
import { TEST_PAT } from "./support/aws.ts";

/** SDK clients pointed at the proxy; `maxAttempts: 1` shows each answer as the SDK reads it. */
function aws(proxy: FaultProxy, maxAttempts: number) {
  const config = {
    endpoint: proxy.url,
    region: AWS_ENV.AWS_REGION,
    maxAttempts,
    credentials: {
      accessKeyId: AWS_ENV.AWS_ACCESS_KEY_ID,
      secretAccessKey: AWS_ENV.AWS_SECRET_ACCESS_KEY,
    },
    requestHandler: { requestTimeout: 2_000, throwOnRequestTimeout: true },
  };
  const clients = {
    ec2: new EC2Client(config),
    sqs: new SQSClient(config),
    dynamo: new DynamoDBClient(config),
    [Symbol.dispose]: () => {
      clients.ec2.destroy();
      clients.sqs.destroy();
      clients.dynamo.destroy();
    },
  };
  return clients;
}

const failure = (promise: Promise<unknown>) =>
  promise.then(
    () => assert.fail("the call succeeded"),
    (e) => e as Error & { $metadata?: { httpStatusCode?: number }; $retryable?: unknown },
  );

const queues = async (sqs: SQSClient) =>
  (await sqs.send(new ListQueuesCommand({}))).QueueUrls ?? [];

Deno.test("fault proxy forwards requests unchanged and names each by service and operation", async () => {
  await resetMoto();
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  await using awsProxy = startFaultProxy({ target: MOTO_URL });
  await using ghProxy = startFaultProxy({ target: gh.url });
  using c = aws(awsProxy, 1);
  assert.deepEqual((await c.ec2.send(new DescribeInstancesCommand({}))).Reservations, []);
  const { QueueUrl } = await c.sqs.send(new CreateQueueCommand({ QueueName: "q1" }));
  assert.match(QueueUrl!, /\/q1$/);
  await failure(c.dynamo.send(new DescribeTableCommand({ TableName: "missing" })));
  const octokit = new Octokit({ auth: TEST_PAT, baseUrl: ghProxy.url });
  const { data } = await octokit.rest.actions.createRegistrationTokenForRepo({
    owner: "acme",
    repo: "widgets",
  });
  assert.equal(data.token, gh.issued[0]);
  assert.deepEqual(awsProxy.requests, [
    { operation: "EC2.DescribeInstances" },
    { operation: "SQS.CreateQueue" },
    { operation: "DynamoDB.DescribeTable" },
  ]);
  assert.deepEqual(ghProxy.requests, [
    { operation: "GitHub.POST /repos/acme/widgets/actions/runners/registration-token" },
  ]);
  assert.equal(awsProxy.injected().length, 0);
});

Deno.test("fault proxy throttles in each AWS service's own dialect, which the SDK retries", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({ target: MOTO_URL });
  using once = aws(proxy, 1);
  for (const op of ["EC2.DescribeInstances", "SQS.ListQueues"]) proxy.inject(op, "throttle");
  proxy.inject("DynamoDB.DescribeTable", "throttle", { times: 2 });
  const ec2 = await failure(once.ec2.send(new DescribeInstancesCommand({})));
  assert.equal(ec2.name, "RequestLimitExceeded");
  assert.equal(ec2.message, "Request limit exceeded.");
  assert.equal(ec2.$metadata?.httpStatusCode, 503);
  const sqs = await failure(once.sqs.send(new ListQueuesCommand({})));
  assert.equal(sqs.name, "RequestThrottled");
  assert.equal(sqs.$metadata?.httpStatusCode, 400);
  const names = [];
  for (let i = 0; i < 2; i++) {
    const e = await failure(once.dynamo.send(new DescribeTableCommand({ TableName: "t" })));
    assert.equal(e.$metadata?.httpStatusCode, 400);
    names.push(e.name);
  }
  assert.deepEqual(names.sort(), ["ProvisionedThroughputExceededException", "ThrottlingException"]);

  // With retries, as refresh's clients have, the SDK reads each as throttling and tries again.
  using retrying = aws(proxy, 3);
  for (const op of ["EC2.DescribeInstances", "SQS.ListQueues", "DynamoDB.ListTables"]) {
    proxy.inject(op, "throttle");
  }
  await retrying.ec2.send(new DescribeInstancesCommand({}));
  await retrying.sqs.send(new ListQueuesCommand({}));
  const { ListTablesCommand } = await import("npm:@aws-sdk/client-dynamodb@3.1164.0");
  await retrying.dynamo.send(new ListTablesCommand({}));
  assert.equal(proxy.injected().length, 7, proxy.describe());
});

Deno.test("fault proxy answers 500 in each AWS dialect, which the SDK retries", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({ target: MOTO_URL });
  using once = aws(proxy, 1);
  proxy.inject(/^(EC2|SQS|DynamoDB)\./, "error", { times: 3 });
  const errors = [
    await failure(once.ec2.send(new DescribeInstancesCommand({}))),
    await failure(once.sqs.send(new ListQueuesCommand({}))),
    await failure(once.dynamo.send(new DescribeTableCommand({ TableName: "t" }))),
  ];
  assert.deepEqual(errors.map((e) => [e.name, e.$metadata?.httpStatusCode]), [
    ["InternalError", 500],
    ["InternalFailure", 500],
    ["InternalServerError", 500],
  ]);
  using retrying = aws(proxy, 2);
  proxy.inject("EC2.DescribeInstances", "error");
  await retrying.ec2.send(new DescribeInstancesCommand({}));
});

Deno.test("fault proxy drops a request before it reaches the target", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({ target: MOTO_URL });
  using once = aws(proxy, 1);
  proxy.inject("SQS.CreateQueue", "drop");
  await failure(once.sqs.send(new CreateQueueCommand({ QueueName: "dropped" })));
  assert.deepEqual(await queues(once.sqs), []);
});

Deno.test("fault proxy loses the reply of a request the target did", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({ target: MOTO_URL });
  using once = aws(proxy, 1);
  proxy.inject("SQS.CreateQueue", "lose-reply", { after: 1 });
  await once.sqs.send(new CreateQueueCommand({ QueueName: "first" }));
  await failure(once.sqs.send(new CreateQueueCommand({ QueueName: "second" })));
  assert.deepEqual((await queues(once.sqs)).map((u) => u.split("/").at(-1)).sort(), [
    "first",
    "second",
  ]);
  assert.deepEqual(proxy.requests.map((r) => r.fault ?? "-"), ["-", "lose-reply", "-"]);

  // The SDK retries a lost reply: the target sees the request twice.
  using retrying = aws(proxy, 2);
  proxy.inject("SQS.CreateQueue", "lose-reply");
  await retrying.sqs.send(new CreateQueueCommand({ QueueName: "third" }));
  assert.deepEqual(proxy.requests.slice(3).map((r) => r.fault ?? "-"), ["lose-reply", "-"]);
});

Deno.test("fault proxy holds a stalled request until the client gives up", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({ target: MOTO_URL, stallMs: 5_000 });
  using once = aws(proxy, 1);
  proxy.inject("SQS.CreateQueue", "stall");
  const started = performance.now();
  const e = await failure(once.sqs.send(new CreateQueueCommand({ QueueName: "stalled" })));
  assert.equal(e.name, "TimeoutError");
  assert.ok(performance.now() - started < 4_000);
  assert.deepEqual(await queues(once.sqs), [], "a stalled request never reaches the target");
});

Deno.test("fault proxy rate-limits GitHub the way GitHub does, and Octokit waits and retries", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  await using proxy = startFaultProxy({ target: gh.url });
  const path = "/repos/acme/widgets/actions/runners/registration-token";
  proxy.inject(/registration-token$/, "throttle", { times: 2 });
  const answers = [];
  for (let i = 0; i < 2; i++) {
    const response = await fetch(`${proxy.url}${path}`, {
      method: "POST",
      headers: { authorization: `token ${TEST_PAT}` },
    });
    answers.push({
      status: response.status,
      headers: response.headers,
      body: await response.json(),
    });
  }
  const primary = answers.find((a) => a.status === 403)!;
  assert.equal(primary.headers.get("x-ratelimit-remaining"), "0");
  assert.ok(Number(primary.headers.get("x-ratelimit-reset")) > Date.now() / 1000);
  assert.match(primary.body.message, /^API rate limit exceeded/);
  const secondary = answers.find((a) => a.status === 429)!;
  assert.equal(secondary.headers.get("retry-after"), "1");
  assert.match(secondary.body.message, /secondary rate limit/);
  assert.equal(gh.issued.length, 0, "the throttled requests never reached GitHub");

  const octokit = new (Octokit.plugin(retry, throttling))({
    auth: TEST_PAT,
    baseUrl: proxy.url,
    log: { debug() {}, info() {}, warn() {}, error() {} },
    throttle: { onRateLimit: () => true, onSecondaryRateLimit: () => true },
  });
  proxy.inject(/registration-token$/, "throttle", { times: 2 });
  const started = performance.now();
  const { data } = await octokit.rest.actions.createRegistrationTokenForRepo({
    owner: "acme",
    repo: "widgets",
  });
  assert.equal(data.token, gh.issued[0]);
  assert.ok(performance.now() - started >= 900, "Octokit waited for the limits to lift");
  assert.equal(proxy.injected().length, 4);
});

Deno.test("fault proxy draws the same faults from the same seed, whatever the interleaving", async () => {
  const draw = async (seed: number, order: string[]) => {
    await using gh = startFakeGithub({ tokens: [TEST_PAT] });
    await using proxy = startFaultProxy({
      target: gh.url,
      seed,
      rate: 0.5,
      faults: ["throttle", "error"],
    });
    for (const path of order) {
      const response = await fetch(`${proxy.url}${path}`, {
        headers: { authorization: `token ${TEST_PAT}` },
      });
      await response.body?.cancel();
    }
    const byOperation: Record<string, string[]> = {};
    for (const r of proxy.requests) (byOperation[r.operation] ??= []).push(r.fault ?? "-");
    return byOperation;
  };
  const a = Array(20).fill("/a");
  const b = Array(20).fill("/b");
  const first = await draw(7, [...a, ...b]);
  const interleaved = await draw(7, a.flatMap((x, i) => [x, b[i]]));
  assert.deepEqual(interleaved, first);
  const other = await draw(8, [...a, ...b]);
  assert.notDeepEqual(other, first);
  const faults = Object.values(first).flat().filter((f) => f !== "-").length;
  assert.ok(faults > 5 && faults < 35, `${faults} of 40 faulted at rate 0.5`);
});

Deno.test("fault proxy rewrites the target's answer, or answers a request itself", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({ target: MOTO_URL });
  using once = aws(proxy, 1);
  // The target creates the queue; the client is told the URL it asked about is another.
  proxy.rewrite("SQS.CreateQueue", (answer) => ({
    ...answer,
    body: answer.body.replace("rewritten", "renamed"),
  }));
  const { QueueUrl } = await once.sqs.send(new CreateQueueCommand({ QueueName: "rewritten" }));
  assert.match(QueueUrl!, /\/renamed$/);
  assert.deepEqual((await queues(once.sqs)).map((u) => u.split("/").at(-1)), ["rewritten"]);
  // An answer of the proxy's own: the target never sees the request.
  proxy.respond("SQS.CreateQueue", {
    status: 200,
    headers: { "content-type": "application/x-amz-json-1.0" },
    body: JSON.stringify({ QueueUrl: "http://127.0.0.1/000000000000/imaginary" }),
  });
  const made = await once.sqs.send(new CreateQueueCommand({ QueueName: "imaginary" }));
  assert.equal(made.QueueUrl, "http://127.0.0.1/000000000000/imaginary");
  assert.deepEqual((await queues(once.sqs)).map((u) => u.split("/").at(-1)), ["rewritten"]);
  assert.deepEqual(proxy.requests.map((r) => r.fault ?? "-"), ["rewrite", "-", "respond", "-"]);
});

Deno.test("fault proxy adds each service's latency, and requests on different connections wait side by side", async () => {
  await resetMoto();
  await using proxy = startFaultProxy({
    target: MOTO_URL,
    latencyMs: { DynamoDB: 300, EC2: 600 },
  });
  using once = aws(proxy, 1);
  const started = performance.now();
  // Four DynamoDB calls at once, then one EC2 call.
  await Promise.all(
    Array.from(
      { length: 4 },
      () => failure(once.dynamo.send(new DescribeTableCommand({ TableName: "none" }))),
    ),
  );
  const dynamoMs = performance.now() - started;
  await once.ec2.send(new DescribeInstancesCommand({}));
  const ec2Ms = performance.now() - started - dynamoMs;
  await queues(once.sqs); // no latency for SQS
  assert.ok(dynamoMs >= 300 && dynamoMs < 4 * 300, `4 DynamoDB calls took ${dynamoMs} ms`);
  assert.ok(ec2Ms >= 600, `the EC2 call took ${ec2Ms} ms`);
  assert.deepEqual(proxy.timeline.map((t) => t.operation), [
    ...Array(4).fill("DynamoDB.DescribeTable"),
    "EC2.DescribeInstances",
    "SQS.ListQueues",
  ]);
  const [d1, , , d4, e, q] = proxy.timeline;
  assert.ok(d4.start < d1.end, "the four DynamoDB calls were in flight together");
  assert.ok(e.end - e.start >= 600 && q.end - q.start < 300, JSON.stringify([e, q]));
});

Deno.test("fault proxy as a black hole accepts a connection and never answers", async () => {
  await using proxy = startFaultProxy({ target: MOTO_URL, blackHole: true });
  using once = aws(proxy, 1);
  const started = performance.now();
  const e = await failure(once.sqs.send(new ListQueuesCommand({})));
  assert.equal(e.name, "TimeoutError");
  assert.ok(performance.now() - started >= 2_000, "it waited for the request timeout");
  assert.equal(proxy.connectionsAccepted(), 1);
  assert.deepEqual(proxy.requests, [], "no request was read");
});
