import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { GetCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { parseDesiredState } from "../lib/config.ts";
import type { DesiredState } from "../lib/config.ts";
import { reconcileGithubToken } from "../lib/github_token.ts";
import { readMetadata } from "../lib/metadata.ts";
import type { RunReport } from "../lib/report.ts";
import { reconcileTable } from "../lib/table.ts";
import type { TaskOutcome } from "../lib/task.ts";
import { main } from "../refresh.ts";
import { BASE_ARGS, TEST_PAT, type TestContext, testContext } from "./support/aws.ts";
import { type FakeGithub, type FakeGithubOptions, startFakeGithub } from "./support/github.ts";
import { AWS_ENV } from "./support/moto.ts";
import { checkRefused, type InvalidInput, problemsOf } from "./support/refused.ts";

const START = "2026-01-15T12:00:00Z";
const REPO_PATH = "/repos/acme/widgets/actions/runners/registration-token";
const ORG_PATH = "/orgs/acme/actions/runners/registration-token";

// A GitHub App key made for this run (PKCS#1, as GitHub hands them out); never committed.
const APP_KEY = generateKeyPairSync("rsa", {
  modulusLength: 2048,
  publicKeyEncoding: { type: "spki", format: "pem" },
  privateKeyEncoding: { type: "pkcs1", format: "pem" },
});
const OTHER_KEY = generateKeyPairSync("rsa", {
  modulusLength: 2048,
  privateKeyEncoding: { type: "pkcs1", format: "pem" },
  publicKeyEncoding: { type: "spki", format: "pem" },
}).privateKey;
const APP = { id: "12345", installationId: 678, publicKeyPem: APP_KEY.publicKey };

/** Every text these tests saw come out of refresh, and every secret that must not be in it. */
const outputs: string[] = [];
const secrets = new Set<string>([TEST_PAT, APP_KEY.privateKey, OTHER_KEY]);

function record(ctx: TestContext, gh: FakeGithub, outcome?: TaskOutcome): void {
  if (outcome) outputs.push(JSON.stringify(outcome));
  outputs.push(...ctx.lines);
  for (const token of gh.issued) secrets.add(token);
  for (const token of ctx.secrets) if (token) secrets.add(token);
}

interface Setup {
  ctx: TestContext;
  gh: FakeGithub;
  run: () => Promise<TaskOutcome>;
  /** Runs the task expecting it to fail, and returns its error message. */
  fail: () => Promise<string>;
  stored: () => Promise<Record<string, unknown> | undefined>;
  [Symbol.asyncDispose]: () => Promise<void>;
}

/**
 * moto with the pool's table, a fake GitHub whose clock is the task's, and a context pointed at it.
 * `args` replace BASE_ARGS when `ownArgs` is set (organization runs need no --repo).
 */
async function setup(
  args: string[] = [],
  options: {
    github?: FakeGithubOptions;
    env?: Record<string, string>;
    ownArgs?: boolean;
    table?: boolean;
  } = {},
): Promise<Setup> {
  let now = () => new Date(START);
  const gh = startFakeGithub({ tokens: [TEST_PAT], now: () => now(), ...options.github });
  const allArgs = ["--only", "table,github-token", "--github-api-url", gh.url, ...args];
  const env = options.env ?? { GITHUB_TOKEN: TEST_PAT };
  const ctx = await testContext(allArgs, { env, ownArgs: options.ownArgs, now: START });
  now = ctx.now;
  if (options.table !== false) await reconcileTable({ ...ctx, dryRun: false });
  ctx.counter.reset();
  const run = async () => {
    const outcome = await reconcileGithubToken(ctx);
    record(ctx, gh, outcome);
    return outcome;
  };
  return {
    ctx,
    gh,
    run,
    fail: async () => {
      let message = "";
      await assert.rejects(run(), (error: Error) => {
        message = error.message;
        return true;
      });
      outputs.push(message);
      record(ctx, gh);
      return message;
    },
    stored: async () =>
      await readMetadata(ctx.clients.ddb, ctx.desired.table, "gh_registration_token") as
        | Record<string, unknown>
        | undefined,
    [Symbol.asyncDispose]: () => gh.close(),
  };
}

function parse(args: string[], env: Record<string, string>): DesiredState {
  const desired = parseDesiredState({
    args,
    env,
    readTextFile: () => {
      throw new Error("no file");
    },
  });
  if (desired === "help") throw new Error("unexpected help");
  return desired;
}

const ORG_ARGS = ["--region", "us-east-1", "--org", "acme", "--table", "acme-ci-table"];
const githubCalls = (ctx: TestContext) => ctx.counter.total((op) => op.startsWith("GitHub."));
const plusMinutes = (minutes: number) =>
  new Date(Date.parse(START) + minutes * 60_000).toISOString();

Deno.test("github-token fetches and stores a token when none is stored", async () => {
  await using s = await setup();
  const outcome = await s.run();
  assert.equal(s.gh.issued.length, 1);
  const token = s.gh.issued[0];
  assert.deepEqual(s.ctx.counter.toJSON(), {
    "DynamoDB.GetItem": 1,
    "DynamoDB.PutItem": 1,
    [`GitHub.POST /repos/{owner}/{repo}/actions/runners/registration-token`]: 1,
  });
  assert.deepEqual(await s.stored(), {
    token,
    timestamp: "2026-01-15T12:00:00Z",
    expires_at: "2026-01-15T13:00:00Z",
  });
  const item = await s.ctx.clients.ddb.send(
    new GetCommand({
      TableName: "acme-widgets-ci-table",
      Key: { PK: "TYPE#METADATA", SK: "ID#gh_registration_token" },
    }),
  );
  assert.equal(item.Item?.entityType, "METADATA");
  assert.equal(item.Item?.identifier, "gh_registration_token");
  assert.equal(item.Item?.updatedAt, "2026-01-15T12:00:00Z");
  assert.deepEqual(s.gh.requests.map((r) => [r.method, r.path, r.authorization]), [
    ["POST", REPO_PATH, `token ${TEST_PAT}`],
  ]);
  assert.deepEqual(outcome.changes.map((c) => [c.action, c.target, c.detail]), [
    ["fetch", "registration token for repository acme/widgets", "no token is stored"],
    ["write", "metadata gh_registration_token", "token expiring at 2026-01-15T13:00:00Z"],
  ]);
  assert.deepEqual(outcome.found, {
    scope: "repository acme/widgets",
    credential: "personal access token (GITHUB_TOKEN)",
    token: "missing",
  });
  assert.match(outcome.summary, /^fetched a new registration token for repository acme\/widgets/);
  assert.ok(s.ctx.secrets.includes(token), "the fetched token is registered as a secret");
});

Deno.test("github-token makes no GitHub call and no write while the stored token is fresh", async () => {
  await using s = await setup();
  await s.run();
  s.ctx.counter.reset();
  s.ctx.setNow(plusMinutes(29)); // 31 minutes left, the margin is 30
  const outcome = await s.run();
  assert.deepEqual(outcome.changes, []);
  assert.equal(githubCalls(s.ctx), 0);
  assert.equal(s.ctx.counter.writes(), 0);
  assert.deepEqual(s.ctx.counter.toJSON(), { "DynamoDB.GetItem": 1 });
  assert.equal(s.gh.requests.length, 1);
  assert.deepEqual(outcome.found, {
    scope: "repository acme/widgets",
    credential: "personal access token (GITHUB_TOKEN)",
    token: "fresh",
    expiresAt: "2026-01-15T13:00:00Z",
    minutesLeft: 31,
  });
  assert.equal(
    outcome.summary,
    "registration token for repository acme/widgets valid until 2026-01-15T13:00:00Z (31 min left)",
  );
});

Deno.test("github-token fetches a new token when the stored one expires within the margin", async () => {
  await using s = await setup();
  await s.run();
  s.ctx.setNow(plusMinutes(31)); // 29 minutes left
  s.ctx.counter.reset();
  const outcome = await s.run();
  assert.equal(s.gh.issued.length, 2);
  assert.equal(
    outcome.changes[0].detail,
    "the stored token expires at 2026-01-15T13:00:00Z, within the 30 min margin (29 min left)",
  );
  assert.equal(outcome.found.token, "expiring");
  assert.deepEqual(await s.stored(), {
    token: s.gh.issued[1],
    timestamp: "2026-01-15T12:31:00Z",
    expires_at: "2026-01-15T13:31:00Z",
  });
  assert.equal(s.ctx.counter.writes(), 2, "one POST to GitHub, one PutItem");
});

Deno.test("github-token honours --token-margin-min", async () => {
  await using s = await setup(["--token-margin-min", "10"]);
  await s.run();
  s.ctx.setNow(plusMinutes(45)); // 15 minutes left, outside a 10 minute margin
  assert.deepEqual((await s.run()).changes, []);
  s.ctx.setNow(plusMinutes(51)); // 9 minutes left
  assert.equal((await s.run()).found.token, "expiring");
  assert.equal(s.gh.issued.length, 2);
});

Deno.test("github-token fetches a new token after the stored one expired", async () => {
  await using s = await setup();
  await s.run();
  s.ctx.setNow(plusMinutes(120));
  const outcome = await s.run();
  assert.equal(outcome.found.token, "expired");
  assert.equal(outcome.changes[0].detail, "the stored token expired at 2026-01-15T13:00:00Z");
  assert.equal((await s.stored())?.expires_at, "2026-01-15T15:00:00Z");
});

Deno.test("github-token replaces a stored record it cannot read", async () => {
  await using s = await setup();
  await s.run();
  const { writeMetadata } = await import("../lib/metadata.ts");
  await writeMetadata(s.ctx, "gh_registration_token", { token: "", expires_at: "later" });
  const outcome = await s.run();
  assert.equal(outcome.found.token, "unreadable");
  assert.equal((await s.stored())?.token, s.gh.issued[1]);
});

Deno.test("github-token stores GitHub's expires_at in UTC without fractional seconds", async () => {
  await using s = await setup();
  s.gh.fail(/^POST .*registration-token$/, {
    status: 201,
    body: { token: "AOFFSETREGISTRATIONTOKEN0001", expires_at: "2026-01-15T05:00:00.000-08:00" },
  });
  secrets.add("AOFFSETREGISTRATIONTOKEN0001");
  await s.run();
  assert.deepEqual(await s.stored(), {
    token: "AOFFSETREGISTRATIONTOKEN0001",
    timestamp: "2026-01-15T12:00:00Z",
    expires_at: "2026-01-15T13:00:00Z",
  });
  assert.ok(s.ctx.secrets.includes("AOFFSETREGISTRATIONTOKEN0001"));
});

Deno.test("github-token fetches an organization token with --org", async () => {
  await using s = await setup(ORG_ARGS, { ownArgs: true });
  const outcome = await s.run();
  assert.deepEqual(s.gh.requests.map((r) => [r.method, r.path]), [["POST", ORG_PATH]]);
  assert.equal(outcome.found.scope, "organization acme");
  assert.equal((await s.stored())?.token, s.gh.issued[0]);
});

Deno.test("github-token runs the App flow: JWT, installation look-up, installation token, registration token", async () => {
  await using s = await setup(["--github-app-id", APP.id], {
    env: { GITHUB_APP_PRIVATE_KEY: APP_KEY.privateKey },
    github: { tokens: [], app: APP },
  });
  const outcome = await s.run();
  const [lookup, access, registration] = s.gh.requests;
  assert.equal(s.gh.requests.length, 3);
  assert.deepEqual([lookup.method, lookup.path], ["GET", "/repos/acme/widgets/installation"]);
  assert.match(lookup.authorization!, /^bearer [\w-]+\.[\w-]+\.[\w-]+$/);
  assert.deepEqual([access.method, access.path], ["POST", "/app/installations/678/access_tokens"]);
  assert.match(access.authorization!, /^bearer /);
  assert.deepEqual([registration.method, registration.path], ["POST", REPO_PATH]);
  const installationToken = registration.authorization!.replace(/^token /, "");
  assert.match(installationToken, /^ghs_/);
  assert.ok(s.ctx.secrets.includes(installationToken), "the installation token is a secret");
  assert.ok(s.ctx.secrets.includes(s.gh.issued[0]));
  assert.equal((await s.stored())?.token, s.gh.issued[0]);
  assert.equal(outcome.found.credential, "GitHub App 12345, installation looked up");
  assert.equal(s.ctx.counter.total((op) => op.startsWith("GitHub.")), 3);
});

Deno.test("github-token skips the installation look-up when the installation id is given, key with \\n escapes", async () => {
  await using s = await setup(
    [...ORG_ARGS, "--github-app-id", APP.id, "--github-app-installation-id", "678"],
    {
      // As a key pasted on one line into a secret, newlines written as \n.
      env: { GITHUB_APP_PRIVATE_KEY: APP_KEY.privateKey.replace(/\n/g, "\\n") },
      github: { tokens: [], app: APP },
      ownArgs: true,
    },
  );
  await s.run();
  assert.deepEqual(s.gh.requests.map((r) => `${r.method} ${r.path}`), [
    "POST /app/installations/678/access_tokens",
    `POST ${ORG_PATH}`,
  ]);
});

Deno.test("github-token says the App is not installed when the look-up answers 404", async () => {
  await using s = await setup(["--github-app-id", APP.id], {
    env: { GITHUB_APP_PRIVATE_KEY: APP_KEY.privateKey },
    github: { tokens: [], app: { ...APP, installedOn: ["acme/other"] } },
  });
  const message = await s.fail();
  assert.match(message, /^GitHub answered 404 to GET \/repos\/acme\/widgets\/installation/);
  assert.match(message, /GitHub App 12345 is not installed on repository acme\/widgets/);
  assert.match(message, /--github-app-installation-id/);
  assert.equal(await s.stored(), undefined);
});

Deno.test("github-token says the App's JWT was rejected when the key is not the App's", async () => {
  await using s = await setup(["--github-app-id", APP.id], {
    env: { GITHUB_APP_PRIVATE_KEY: OTHER_KEY },
    github: { tokens: [], app: APP },
  });
  const message = await s.fail();
  assert.match(message, /^GitHub answered 401 to GET \/repos\/acme\/widgets\/installation/);
  assert.match(message, /rejected the App's JWT; check that GITHUB_APP_ID \(12345\)/);
});

Deno.test("github-token works against a GitHub Enterprise Server base URL", async () => {
  await using s = await setup([], { github: { basePath: "/api/v3" } });
  assert.match(s.gh.url, /\/api\/v3$/);
  await s.run();
  assert.deepEqual(s.gh.requests.map((r) => r.path), [`/api/v3${REPO_PATH}`]);
  assert.equal((await s.stored())?.token, s.gh.issued[0]);
});

Deno.test("github-token names a bad personal access token on 401", async () => {
  await using s = await setup([], { github: { tokens: ["ghp_SomeOtherTokenThatIsAccepted000"] } });
  const message = await s.fail();
  assert.equal(
    message,
    `GitHub answered 401 to POST ${REPO_PATH} ("Bad credentials"): the personal access token ` +
      "in GITHUB_TOKEN is invalid, expired or revoked",
  );
  assert.equal(s.ctx.counter.writes(), 1, "the POST only; nothing stored");
});

Deno.test("github-token names the missing scope or permission on 403", async () => {
  await using s = await setup();
  s.gh.fail(/registration-token$/, {
    status: 403,
    body: { message: "Resource not accessible by personal access token" },
  });
  const message = await s.fail();
  assert.match(message, /^GitHub answered 403 to POST \/repos\/acme\/widgets\//);
  assert.match(message, /"Resource not accessible by personal access token"/);
  assert.match(message, /a classic PAT needs the scope "repo"/);
  assert.match(
    message,
    /fine-grained PAT the repository permission "Administration: Read and write"/,
  );
  assert.equal(s.gh.requests.length, 1, "a permission error is not retried");
});

Deno.test("github-token names the organization permission on 403 at organization level", async () => {
  await using s = await setup(ORG_ARGS, { ownArgs: true });
  s.gh.fail(/registration-token$/, { status: 403, body: { message: "Must have admin rights" } });
  const message = await s.fail();
  assert.match(message, /a classic PAT needs the scope "admin:org"/);
  assert.match(message, /"Self-hosted runners: Read and write"/);
  assert.match(message, /admin of the organization/);
});

Deno.test("github-token names the App's permission on 403", async () => {
  await using s = await setup(["--github-app-id", APP.id], {
    env: { GITHUB_APP_PRIVATE_KEY: APP_KEY.privateKey },
    github: { tokens: [], app: APP },
  });
  s.gh.fail(/registration-token$/, {
    status: 403,
    body: { message: "Resource not accessible by integration" },
  });
  const message = await s.fail();
  assert.match(
    message,
    /the GitHub App 12345 needs the repository permission "Administration: Read and write"/,
  );
});

Deno.test("github-token names a wrong repository on 404", async () => {
  await using s = await setup();
  s.gh.fail(/registration-token$/, { status: 404, body: { message: "Not Found" } });
  const message = await s.fail();
  assert.match(message, /^GitHub answered 404 to POST \/repos\/acme\/widgets\//);
  assert.match(message, /repository acme\/widgets does not exist at http:\/\/127\.0\.0\.1:\d+/);
  assert.match(message, /check --repo and --github-api-url/);
});

Deno.test("github-token retries a server error and then succeeds", async () => {
  await using s = await setup();
  s.gh.fail(/registration-token$/, { status: 502, body: { message: "Server Error" } });
  await s.run();
  assert.equal(s.gh.requests.length, 2);
  assert.equal((await s.stored())?.token, s.gh.issued[0]);
});

Deno.test("github-token says the App key cannot sign when it is not a usable key", async () => {
  const broken =
    "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END RSA PRIVATE KEY-----";
  secrets.add("bm90IGEga2V5IGF0IGFsbA==");
  await using s = await setup(["--github-app-id", APP.id], {
    env: { GITHUB_APP_PRIVATE_KEY: broken },
    github: { tokens: [], app: APP },
  });
  const message = await s.fail();
  assert.match(message, /^cannot authenticate as GitHub App 12345: /);
  assert.match(message, /check that GITHUB_APP_PRIVATE_KEY is the App's PEM private key$/);
  assert.equal(s.gh.requests.length, 0);
});

Deno.test("github-token waits out a rate limit and then succeeds", async () => {
  await using s = await setup();
  const reset = String(Math.floor(Date.now() / 1000) - 5); // already lifted: retried at once
  s.gh.fail(/registration-token$/, {
    status: 403,
    body: { message: "API rate limit exceeded for user ID 1." },
    headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset },
  });
  s.gh.fail(/registration-token$/, {
    status: 429,
    body: { message: "You have exceeded a secondary rate limit." },
    headers: { "retry-after": "1" },
  });
  await s.run();
  assert.equal(s.gh.requests.length, 3);
  assert.equal((await s.stored())?.token, s.gh.issued[0]);
});

Deno.test("github-token gives up on a rate limit that lifts too late, and says until when", async () => {
  await using s = await setup();
  const reset = Math.floor(Date.now() / 1000) + 3600;
  s.gh.fail(/registration-token$/, {
    status: 403,
    body: { message: "API rate limit exceeded for user ID 1." },
    headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(reset) },
  });
  const message = await s.fail();
  assert.match(message, /the API rate limit of this credential is exhausted until \d{4}-.*Z;/);
  assert.equal(s.gh.requests.length, 1);
});

Deno.test("github-token under dry-run says why it would fetch, and fetches nothing", async () => {
  await using s = await setup(["--dry-run"], { table: false });
  const outcome = await s.run();
  assert.equal(
    outcome.summary,
    "would fetch a new registration token for repository acme/widgets: no token is stored",
  );
  assert.equal(outcome.changes.length, 2);
  assert.equal(s.gh.requests.length, 0);
  assert.equal(s.ctx.counter.writes(), 0);
});

Deno.test("github-token under dry-run fetches nothing for an expiring token either", async () => {
  await using s = await setup();
  await s.run();
  const dry = { ...s.ctx, dryRun: true, desired: { ...s.ctx.desired, dryRun: true } };
  dry.setNow(plusMinutes(45));
  s.ctx.counter.reset();
  const outcome = await reconcileGithubToken(dry);
  record(s.ctx, s.gh, outcome);
  assert.match(
    outcome.summary,
    /^would fetch .*: the stored token expires at 2026-01-15T13:00:00Z/,
  );
  assert.equal(githubCalls(s.ctx), 0);
  assert.equal(s.ctx.counter.writes(), 0);
  assert.equal((await s.stored())?.token, s.gh.issued[0]);
});

Deno.test("github-token settings without an App id are refused before any call", () => {
  const problems = (env: Record<string, string>, args: string[] = []) => {
    try {
      parse([...BASE_ARGS, ...args], env);
      return "";
    } catch (error) {
      return (error as Error).message;
    }
  };
  assert.match(
    problems({ GITHUB_TOKEN: TEST_PAT, GITHUB_APP_PRIVATE_KEY: APP_KEY.privateKey }),
    /github-app-id: required with GITHUB_APP_PRIVATE_KEY; set --github-app-id or GITHUB_APP_ID/,
  );
  assert.match(
    problems({ GITHUB_TOKEN: TEST_PAT }, ["--github-app-installation-id", "678"]),
    /github-app-id: required with github-app-installation-id/,
  );
  assert.equal(problems({ GITHUB_TOKEN: TEST_PAT }), "");
});

/** Runs refresh.ts's main() in-process and returns everything it printed. */
async function runMain(args: string[], env: Record<string, string>) {
  const out: string[] = [];
  const code = await main(args, { ...AWS_ENV, ...env }, {
    stdout: (t) => out.push(t),
    stderr: (t) => out.push(t),
    readTextFile: (path) => Deno.readTextFileSync(path),
  });
  outputs.push(...out);
  return { code, out };
}

Deno.test("refresh's report and log carry no secret, with a PAT or an App, on success or failure", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT], app: APP });
  const args = [...BASE_ARGS, "--only", "table,github-token", "--github-api-url", gh.url];
  const pat = await runMain([...args, "--json"], { GITHUB_TOKEN: TEST_PAT });
  assert.equal(pat.code, 0, pat.out.join("\n"));
  const report: RunReport = JSON.parse(pat.out.at(-1)!);
  const result = report.results.find((r) => r.task === "github-token")!;
  assert.equal(result.status, "changed");
  assert.equal(
    report.calls["GitHub.POST /repos/{owner}/{repo}/actions/runners/registration-token"],
    1,
  );

  const again = await runMain([...args, "--json"], { GITHUB_TOKEN: TEST_PAT });
  assert.equal(JSON.parse(again.out.at(-1)!).writeCalls, 0, "a second run writes nothing");

  const app = await runMain([...args, "--github-app-id", APP.id, "--table", "app-ci-table"], {
    GITHUB_APP_PRIVATE_KEY: APP_KEY.privateKey,
  });
  assert.equal(app.code, 0, app.out.join("\n"));
  const denied = await runMain([...args, "--table", "denied-ci-table"], {
    GITHUB_TOKEN: "ghp_RevokedPersonalAccessToken00000000",
  });
  secrets.add("ghp_RevokedPersonalAccessToken00000000");
  assert.equal(denied.code, 1);
  assert.match(denied.out.join("\n"), /invalid, expired or revoked/);
  for (const token of gh.issued) secrets.add(token);
  for (const r of gh.requests) {
    const m = /^token (ghs_\w+)$/.exec(r.authorization ?? "");
    if (m) secrets.add(m[1]);
  }
  assert.ok(gh.issued.length >= 2);
});

Deno.test("no secret appears in any output of these tests", () => {
  assert.ok(outputs.length > 50, `outputs were collected (${outputs.length})`);
  assert.ok(secrets.size >= 10, `secrets were collected (${secrets.size})`);
  const keyLines = [APP_KEY.privateKey, OTHER_KEY].flatMap((k) =>
    k.split("\n").filter((l) => l.length > 20 && !l.startsWith("-----"))
  );
  for (const text of outputs) {
    for (const secret of [...secrets, ...keyLines]) {
      assert.ok(!text.includes(secret), `a secret appears in: ${text.slice(0, 200)}`);
    }
  }
});

Deno.test("github-token selects App auth when an App id is given", () => {
  const key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----\n";
  const d = parse([...BASE_ARGS, "--github-app-id", "12345"], { GITHUB_APP_PRIVATE_KEY: key });
  assert.deepEqual(d.github.auth, {
    kind: "app",
    appId: "12345",
    privateKey: key,
    installationId: undefined,
  });
});

Deno.test("github-token inputs never echo a secret in their problems", () => {
  const key = "-----BEGIN NOT A KEY-----SuperSecretMaterial";
  const problems = problemsOf([...BASE_ARGS, "--github-app-id", "12"], {
    GITHUB_APP_PRIVATE_KEY: key,
  });
  assert.match(problems.join("\n"), /GITHUB_APP_PRIVATE_KEY is not a PEM private key/);
  assert.doesNotMatch(problems.join("\n"), /SuperSecretMaterial/);
});

// Each invalid input of the task: the problem names the field, the offending value and what is
// expected.
const INVALID: InvalidInput[] = [
  [
    "App id without private key",
    [...BASE_ARGS, "--github-app-id", "123"],
    {},
    /github-app-private-key: required with github-app-id; set GITHUB_APP_PRIVATE_KEY/,
  ],
  [
    "no GitHub credential",
    BASE_ARGS,
    {},
    /github-token: required by task github-token; set GITHUB_TOKEN or --github-app-id or GITHUB_APP_ID/,
  ],
  [
    "malformed API URL",
    [...BASE_ARGS, "--github-api-url", "ftp:/x"],
    undefined,
    /github-api-url: "ftp:\/x" is not an http\(s\) URL/,
  ],
];

Deno.test("github-token refuses invalid inputs with a message and sends no request", (t) =>
  checkRefused(t, INVALID));
