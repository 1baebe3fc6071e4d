/**
 * The bootstrap's AWS client (lib/bootstrap_aws_client.ts), run with python3 as the bootstrap runs
 * it, against a fake instance-metadata server and moto behind a proxy that checks every request's
 * Signature Version 4 as AWS does (test/support/sigv4_check.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CreateTableCommand, DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { DynamoDBDocumentClient, GetCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { AWS_CLIENT_PY_COMPACT } from "../lib/bootstrap.ts";
import { tableDefinition } from "../lib/table.ts";
import { startFakeImds } from "./support/imds.ts";
import { MOTO_URL } from "./support/moto.ts";
import { startSigV4Check } from "./support/sigv4_check.ts";
import { TOOLS_PATH } from "./support/tools_bin.ts";

const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "testing", secretAccessKey: "testing" };
const INSTANCE = "i-0123456789abcdef0";

async function setup(name: string, options: { credentialsTtlSec?: number } = {}) {
  const dir = await Deno.makeTempDir({ prefix: `aws-client-${name}-` });
  const privateDir = join(dir, "private");
  await Deno.mkdir(privateDir, { mode: 0o700 });
  const client = join(privateDir, "aws.py");
  await Deno.writeTextFile(client, AWS_CLIENT_PY_COMPACT);
  const table = `aws-client-${name}-${crypto.randomUUID().slice(0, 8)}`;
  const ddbClient = new DynamoDBClient({
    endpoint: MOTO_URL,
    region: REGION,
    credentials: CREDENTIALS,
  });
  await ddbClient.send(new CreateTableCommand(tableDefinition(table)));
  const imds = startFakeImds({ instanceId: INSTANCE, region: REGION, tags: {}, ...options });
  const check = startSigV4Check({
    target: MOTO_URL,
    region: REGION,
    credentials: () => [imds.credentials],
  });
  const cache = join(privateDir, "credentials.json");
  const run = async (...args: string[]) => {
    const out = await new Deno.Command("python3", {
      args: ["-I", "-S", client, REGION, table, cache, imds.url, ...args],
      env: { PATH: TOOLS_PATH, AWS_ENDPOINT_URL: check.url },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  };
  const credentialReads = () =>
    imds.requests.filter((r) => r.path.startsWith("/latest/meta-data/iam/security-credentials/"))
      .length;
  return {
    dir,
    cache,
    table,
    imds,
    check,
    run,
    credentialReads,
    ddb: DynamoDBDocumentClient.from(ddbClient),
    [Symbol.asyncDispose]: async () => {
      await imds.close();
      await check.close();
      ddbClient.destroy();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("the AWS client signs every call with the instance role's credentials from metadata, as AWS checks them", async () => {
  await using t = await setup("signs");
  const put = await t.run("put-signal", INSTANCE, "UD_OK", "7");
  assert.equal(put.code, 0, put.stderr);
  const { Item } = await t.ddb.send(
    new GetCommand({ TableName: t.table, Key: { PK: "TYPE#WS", SK: `ID#${INSTANCE}` } }),
  );
  assert.deepEqual(Item?.value, { state: "UD_OK", runId: "7" });
  assert.equal(Item?.entityType, "WS");
  const got = await t.run("get", "WS", INSTANCE, "value.M.state.S");
  assert.deepEqual([got.code, got.stdout], [0, "UD_OK\n"]);
  const missing = await t.run("get", "INSTANCE", INSTANCE, "runId.S");
  assert.deepEqual([missing.code, missing.stdout], [0, "\n"]);
  assert.deepEqual(t.check.requests, [
    { operation: "DynamoDB.PutItem", accessKeyId: t.imds.credentials.AccessKeyId },
    { operation: "DynamoDB.GetItem", accessKeyId: t.imds.credentials.AccessKeyId },
    { operation: "DynamoDB.GetItem", accessKeyId: t.imds.credentials.AccessKeyId },
  ]);
  // IMDSv2 only.
  assert.ok(t.imds.requests.every((r) => r.authorized), JSON.stringify(t.imds.requests));
  // Never the secret or the session token in what it says.
  for (const out of [put, got, missing]) {
    assert.ok(!out.stderr.includes(t.imds.credentials.SecretAccessKey));
    assert.ok(!out.stderr.includes(t.imds.credentials.Token));
  }
});

Deno.test("the AWS client is refused when it signs with credentials other than the instance role's", async () => {
  await using t = await setup("refused");
  // Another role's credentials in the cache (valid for hours): the check answers 403 as AWS would.
  await Deno.writeTextFile(
    t.cache,
    JSON.stringify({
      AccessKeyId: "ASIAOTHERROLEXXXXXXX",
      SecretAccessKey: "x".repeat(40),
      Token: "y".repeat(100),
      Expiration: new Date(Date.now() + 3600_000).toISOString().replace(/\.\d{3}Z$/, "Z"),
    }),
    { mode: 0o600 },
  );
  const out = await t.run("put-signal", INSTANCE, "UD_OK", "7");
  assert.equal(out.code, 1);
  assert.match(out.stderr, /AWS call failed \(put-signal\): dynamodb answered HTTP 403/);
  assert.equal(t.check.requests[0].problem, "unknown access key ASIAOTHERROLEXXXXXXX");
});

Deno.test("the AWS client caches the credentials root-only and reads metadata again only near expiry", async () => {
  await using t = await setup("cache");
  for (let i = 0; i < 3; i++) assert.equal((await t.run("get", "WS", INSTANCE, "x.S")).code, 0);
  // One role listing and one credentials read, then the cache.
  assert.equal(t.credentialReads(), 2);
  const stat = await Deno.stat(t.cache);
  assert.equal(stat.mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(join(t.dir, "private"))).mode! & 0o777, 0o700);
  assert.equal(
    JSON.parse(await Deno.readTextFile(t.cache)).AccessKeyId,
    t.imds.credentials.AccessKeyId,
  );

  // Credentials that expire within 5 minutes are read anew on every call.
  await using short = await setup("renew", { credentialsTtlSec: 200 });
  for (let i = 0; i < 2; i++) assert.equal((await short.run("get", "WS", INSTANCE, "x.S")).code, 0);
  assert.equal(short.credentialReads(), 4);
});

Deno.test("the AWS client says which call failed and why, without retrying a refused request", async () => {
  await using t = await setup("fails");
  const started = Date.now();
  const out = await t.run("put-signal", INSTANCE, "UD_OK", "bad run id with spaces is fine");
  assert.equal(out.code, 0, out.stderr);
  // A table that does not exist: DynamoDB's answer, once (a 400 is not retried).
  const wrong = await new Deno.Command("python3", {
    args: [
      "-I",
      "-S",
      join(t.dir, "private", "aws.py"),
      REGION,
      "no-such-table",
      t.cache,
      t.imds.url,
      "get",
      "WS",
      INSTANCE,
      "x.S",
    ],
    env: { PATH: TOOLS_PATH, AWS_ENDPOINT_URL: t.check.url },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(wrong.stderr);
  assert.equal(wrong.code, 1);
  assert.match(
    stderr,
    /AWS call failed \(get\): dynamodb answered HTTP 400: .*ResourceNotFoundException/,
  );
  assert.equal(t.check.requests.filter((r) => r.operation === "DynamoDB.GetItem").length, 1);
  assert.ok(Date.now() - started < 20_000);
});

Deno.test("the AWS client fails with the reason when the instance has no role", async () => {
  const dir = await Deno.makeTempDir({ prefix: "aws-client-norole-" });
  try {
    const client = join(dir, "aws.py");
    await Deno.writeTextFile(client, AWS_CLIENT_PY_COMPACT);
    // A metadata server without the iam/ tree answers 404 there.
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (r) =>
        new URL(r.url).pathname === "/latest/api/token"
          ? new Response("token")
          : new Response("", { status: 404 }),
    );
    try {
      const out = await new Deno.Command("python3", {
        args: [
          "-I",
          "-S",
          client,
          REGION,
          "t",
          join(dir, "c.json"),
          `http://127.0.0.1:${server.addr.port}`,
          "get",
          "WS",
          INSTANCE,
          "x.S",
        ],
        env: { PATH: TOOLS_PATH, AWS_ENDPOINT_URL: "http://127.0.0.1:9" },
        clearEnv: true,
        stderr: "piped",
      }).output();
      assert.equal(out.code, 1);
      assert.match(
        new TextDecoder().decode(out.stderr),
        /AWS call failed \(get\): instance metadata \/latest\/meta-data\/iam\/security-credentials\/ answered HTTP 404/,
      );
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the AWS client's loops stop when the bootstrap that started them is gone", async () => {
  await using t = await setup("orphan");
  const client = join(t.dir, "private", "aws.py");
  // A parent that starts the heartbeat loop, prints its pid and exits a second later.
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      'python3 -I -S "$@" heartbeat i-0123456789abcdef0 1 >/dev/null 2>&1 & echo $!; sleep 1',
      "-",
      client,
      REGION,
      t.table,
      t.cache,
      t.imds.url,
    ],
    env: { PATH: TOOLS_PATH, AWS_ENDPOINT_URL: t.check.url },
    clearEnv: true,
    stdout: "piped",
  }).output();
  const pid = Number(new TextDecoder().decode(out.stdout).trim());
  const alive = () =>
    new Deno.Command("kill", { args: ["-0", String(pid)], stderr: "null" }).outputSync()
      .success;
  const deadline = Date.now() + 15_000;
  while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const survived = alive();
  if (survived) Deno.kill(pid, "SIGKILL");
  assert.ok(!survived, `the heartbeat loop ${pid} outlived its parent`);
});
