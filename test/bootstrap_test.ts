/**
 * The generated instance bootstrap (lib/bootstrap.ts): what the generator bakes in and refuses,
 * shellcheck on spec variants, and the script executed for real by bash against moto, a fake
 * instance-metadata server, a fake runner package and a control plane that plays provision,
 * claim and release as PROTOCOL.md describes.
 */
import assert from "node:assert/strict";
import { readDocs } from "./support/docs.ts";
import {
  AWS_CLIENT_PY_COMPACT,
  BOOTSTRAP_AWS_ACTIONS,
  BOOTSTRAP_TEST_OVERRIDES,
  bootstrapScript,
  type BootstrapSpec,
  COMPACT_HEADER,
  specProblems,
} from "../lib/bootstrap.ts";
import {
  bootInstance,
  type BootstrapInstance,
  watchCommandLines,
} from "./support/bootstrap_instance.ts";
import type { Outcome } from "./support/control_plane.ts";
import { startFaultProxy } from "./support/fault_proxy.ts";
import { MOTO_URL, resetMoto } from "./support/moto.ts";
import { shellcheck } from "./support/tools_bin.ts";
import { BULKY_SETUP_NOTE, bulkySetupScript } from "./support/bulky_setup_script.ts";
import { type SigningCredentials, startSigV4Check } from "./support/sigv4_check.ts";
import { join } from "node:path";
import { poolRunnerLabel } from "../lib/contract.ts";

const SHA_X64 = "0123456789abcdef".repeat(4);
const SHA_ARM64 = "fedcba9876543210".repeat(4);

const SPEC: BootstrapSpec = {
  table: "acme-widgets-ci-table",
  region: "eu-west-1",
  githubUrl: "https://github.com/acme/widgets",
  poolLabel: "refresh-pool-0123456789abcdef",
  runner: { version: "2.323.0", sha256: { x64: SHA_X64, arm64: SHA_ARM64 } },
};

Deno.test("bootstrapScript bakes in the table, region, URL, version and checksums", () => {
  const script = bootstrapScript(SPEC);
  assert.ok(script.startsWith("#!/bin/bash\n"));
  assert.match(script, /^readonly TABLE='acme-widgets-ci-table'$/m);
  assert.match(script, /^readonly REGION='eu-west-1'$/m);
  assert.match(script, /^readonly GITHUB_URL='https:\/\/github.com\/acme\/widgets'$/m);
  assert.match(script, /^readonly RUNNER_GROUP=''$/m);
  assert.match(
    script,
    /^readonly RUNNER_URL_X64='https:\/\/github.com\/actions\/runner\/releases\/download\/v2.323.0\/actions-runner-linux-x64-2.323.0.tar.gz'$/m,
  );
  assert.match(script, new RegExp(`^readonly RUNNER_SHA256_ARM64='${SHA_ARM64}'$`, "m"));
  assert.match(script, /^readonly HEARTBEAT_SEC='5'$/m);
  assert.match(script, /^readonly CLAIM_POLL_SEC='0.25'$/m);
});

Deno.test("bootstrapScript is deterministic for equal specs and differs when the spec does", () => {
  const copy = structuredClone(SPEC);
  assert.equal(bootstrapScript(SPEC), bootstrapScript(copy));
  assert.notEqual(bootstrapScript(SPEC), bootstrapScript({ ...copy, region: "us-east-1" }));
});

Deno.test("bootstrapScript quotes a runner group and keeps a setup script verbatim", () => {
  const setup = "#!/bin/bash\necho \"$HOME\" '$(x)' `y`\nREFRESH_PRE_RUNNER_SCRIPT\n";
  const script = bootstrapScript({ ...SPEC, runnerGroup: "ci's group", preRunnerScript: setup });
  assert.match(script, /^readonly RUNNER_GROUP='ci'\\''s group'$/m);
  // The script's own line equals the default delimiter, so another one is chosen.
  assert.ok(
    script.includes(`<<'REFRESH_PRE_RUNNER_SCRIPT_1'\n${setup}REFRESH_PRE_RUNNER_SCRIPT_1\n`),
  );
});

Deno.test("bootstrapScript calls AWS only as BOOTSTRAP_AWS_ACTIONS says", () => {
  const script = bootstrapScript({ ...SPEC, preRunnerScript: "#!/bin/sh\ntrue\n" });
  // The AWS client's calls: dynamodb("<Action>", …) and EC2's "Action": "<Action>".
  const calls = new Set([
    ...[...script.matchAll(/\bdynamodb\("(\w+)"/g)].map((m) => `dynamodb:${m[1]}`),
    ...[...script.matchAll(/"Action": "(\w+)"/g)].map((m) => `ec2:${m[1]}`),
  ]);
  assert.deepEqual([...calls].sort(), BOOTSTRAP_AWS_ACTIONS.map((a) => a.action).sort());
  assert.ok(!/^\s*aws /m.test(script), "the script runs the AWS CLI");
  const partitions = (action: string) =>
    [...BOOTSTRAP_AWS_ACTIONS.find((a) => a.action === action)!.partitions!].sort();
  // Reads: `aws_client get ENTITY` (bash) and get("ENTITY", …) (the client's loops).
  const read = new Set([
    ...[...script.matchAll(/aws_client get (\w+) /g)].map((m) => `TYPE#${m[1]}`),
    ...[...script.matchAll(/(?<![.\w])get\("([A-Z]+)"/g)].map((m) => `TYPE#${m[1]}`),
  ]);
  assert.deepEqual([...read].sort(), partitions("dynamodb:GetItem"));
  const written = new Set(
    [...script.matchAll(/(?<![.\w])put\("([A-Z]+)"/g)].map((m) => `TYPE#${m[1]}`),
  );
  assert.deepEqual([...written].sort(), partitions("dynamodb:PutItem"));
});

Deno.test("bootstrapScript reads only the test overrides BOOTSTRAP_TEST_OVERRIDES lists, each documented", () => {
  const script = bootstrapScript({ ...SPEC, preRunnerScript: "#!/bin/sh\ntrue\n" });
  const delimiters = ["REFRESH_AWS_CLIENT", "REFRESH_PRE_RUNNER_SCRIPT"];
  // What the setup script is told (run_setup), not read.
  const told = [
    "REFRESH_JOB_USER",
    "REFRESH_JOB_HOME",
    "REFRESH_RUNNER_DIR",
    "REFRESH_INSTANCE_ID",
    "REFRESH_INITIAL_RUN_ID",
  ];
  const read = new Set(
    [...script.matchAll(/\bREFRESH_[A-Z_]+\b/g)].map((m) => m[0]).filter((name) =>
      !delimiters.includes(name) && !told.includes(name)
    ),
  );
  assert.deepEqual([...read].sort(), Object.values(BOOTSTRAP_TEST_OVERRIDES).sort());
  const readme = readDocs();
  for (const name of read) {
    if (name !== "REFRESH_TEST_MARKER") assert.ok(readme.includes(`\`${name}\``), name);
  }
});

Deno.test("bootstrapScript lists every invalid field at once", () => {
  const bad: BootstrapSpec = {
    table: "x",
    region: "moon",
    githubUrl: "github.com/acme",
    poolLabel: "",
    runner: {
      version: "latest",
      sha256: { x64: "abc", arm64: SHA_ARM64 },
      downloadUrl: "https://mirror/$(id)",
    },
    timings: { heartbeatSec: 0.5, claimPollSec: -1 },
  };
  const problems = specProblems(bad);
  for (
    const field of [
      "table",
      "region",
      "githubUrl",
      "runner.version",
      "runner.sha256.x64",
      "runner.downloadUrl",
      "timings.heartbeatSec",
      "timings.claimPollSec",
    ]
  ) {
    assert.ok(problems.some((p) => p.startsWith(field)), `no problem for ${field}: ${problems}`);
  }
  assert.ok(problems.some((p) => p.startsWith("poolLabel")), problems.join("\n"));
  assert.equal(problems.length, 9);
  assert.throws(() => bootstrapScript(bad), /^Error: invalid bootstrap spec: table/);
});

Deno.test("bootstrapScript passes shellcheck for every spec variant", async () => {
  const variants: BootstrapSpec[] = [
    SPEC,
    { ...SPEC, runnerGroup: "ci runners", githubUrl: "https://github.com/acme" },
    {
      ...SPEC,
      githubUrl: "https://ghe.example.com/acme/widgets",
      preRunnerScript: "#!/bin/sh\nset -e\napt-get install -y jq\n",
      runner: { ...SPEC.runner, downloadUrl: "https://mirror.example.com/{version}/{arch}.tgz" },
      timings: { heartbeatSec: 2, selfTerminateCheckSec: 3, claimPollSec: 1, jobPollSec: 1 },
    },
  ];
  for (const spec of variants) {
    // The compact form is what the user data carries; the commented one is its readable source.
    for (const commented of [false, true]) {
      const result = await shellcheck(bootstrapScript(spec, { commented }));
      assert.equal(
        result,
        "",
        `shellcheck found problems for ${JSON.stringify({ spec, commented })}`,
      );
    }
  }
});

Deno.test("bootstrapScript's compact form says it is generated and where its commented source is", () => {
  const compact = bootstrapScript(SPEC);
  const commented = bootstrapScript(SPEC, { commented: true });
  const [shebang, header] = compact.split("\n");
  assert.equal(shebang, "#!/bin/bash");
  assert.equal(header, COMPACT_HEADER);
  assert.match(header, /generated by refresh.*lib\/bootstrap\.ts/);
  assert.ok(compact.includes(AWS_CLIENT_PY_COMPACT), "the compact AWS client is embedded");
  assert.match(commented, /^# Makes this EC2 instance a runner of the pool/m);
  assert.doesNotMatch(compact, /^# Makes this EC2 instance/m);
  assert.ok(compact.length < commented.length * 0.85, `${compact.length} vs ${commented.length}`);
});

// ---- The script run for real ----------------------------------------------------------------
// Each scenario is one instance (its own table, moto instance, metadata server and runner
// package); independent scenarios run concurrently. The harness' AWS CLI (v1, from PyPI) takes
// about half a second of CPU per call, seconds on a busy machine, so waits here are longer than
// the protocol's; bench/bootstrap_bench.ts measures the real figures against the protocol's.

/** Waits until `check` returns a value (not undefined/false), polling; throws after `ms`. */
async function until<T>(
  what: string,
  ms: number,
  check: () => T | undefined | false | Promise<T | undefined | false>,
) {
  const deadline = Date.now() + ms;
  while (true) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Fails with the instance's log when a control-plane step did not succeed. */
async function expectOk(instance: BootstrapInstance, outcome: Outcome, what: string) {
  if (!outcome.ok) {
    assert.fail(`${what}: ${outcome.reason}\n--- bootstrap log ---\n${await instance.log()}`);
  }
}

async function command(name: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(name, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${name} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

function envOf(text: string): Record<string, string> {
  return Object.fromEntries(
    text.split("\n").filter((l) => l.includes("=")).map((l) => [
      l.slice(0, l.indexOf("=")),
      l.slice(l.indexOf("=") + 1),
    ]),
  );
}

async function runnerHome(user: string): Promise<string> {
  return (await command("getent", "passwd", user)).trim().split(":")[5];
}

async function runnerUid(user: string): Promise<number> {
  return Number((await command("id", "-u", user)).trim());
}

async function processUser(pid: number): Promise<string> {
  return (await command("ps", "-o", "user:32=", "-p", String(pid))).trim();
}

/**
 * Whether a process runs: exists and is not a zombie. A killed process whose parent is PID 1 stays
 * a zombie until init reaps it, which some sandboxes' init does late, and `kill -0` succeeds on a
 * zombie; `ps` shows its state `Z`.
 */
function alive(pid: number): boolean {
  const { code, stdout } = new Deno.Command("ps", {
    args: ["-o", "stat=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const state = new TextDecoder().decode(stdout).trim();
  return code === 0 && state !== "" && !state.startsWith("Z");
}

/**
 * Shortened timings. Every poll is an AWS CLI process, so a scenario that does not watch a loop
 * runs it slowly, leaving the machine's CPU to the scenarios that do.
 */
const TIMINGS = { heartbeatSec: 3, selfTerminateCheckSec: 5, claimPollSec: 1, jobPollSec: 2 };
const QUIET_TIMINGS = { ...TIMINGS, heartbeatSec: 5, selfTerminateCheckSec: 60 };
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

Deno.test("bootstrap run for real", async (t) => {
  const subnetId = (await resetMoto()).subnetIds[0];
  const tokens: string[] = [];
  const scripts: string[] = [];
  const watcher = watchCommandLines(() => tokens, 200);
  const concurrent = { sanitizeOps: false, sanitizeResources: false, sanitizeExit: false };

  const cycle = t.step({
    name: "bootstrap registers, heartbeats, releases, registers <id>-2 on a claim and " +
      "terminates itself past its threshold",
    ...concurrent,
    fn: async () => {
      // A proxy in front of moto checks every AWS call's signature as AWS would, with the
      // credentials the fake metadata server hands out, and records it.
      let roleCredentials: SigningCredentials[] = [];
      await using observer = startSigV4Check({
        target: MOTO_URL,
        region: "us-east-1",
        credentials: () => roleCredentials,
      });
      // A setup script of about 2.6 KB compressed, the room the compact bootstrap leaves.
      const setup = await bulkySetupScript();
      await using instance = await bootInstance({
        subnetId,
        name: "cycle",
        runId: "1001",
        timings: TIMINGS,
        awsEndpoint: observer.url,
        preRunnerScript: setup.script,
      });
      roleCredentials = [instance.imds.credentials];
      tokens.push(
        instance.token,
        instance.imds.credentials.SecretAccessKey,
        instance.imds.credentials.Token,
      );
      scripts.push(instance.script);
      const { plane, instanceId } = instance;

      // Boot: UD_OK, then UD_REG_OK for the initial run id, with a fresh heartbeat. The user
      // data script itself exits (cloud-init completes); the agent goes on in the background.
      await expectOk(instance, await plane.provision(instanceId, "1001"), "provision");
      assert.equal(await instance.exited, 0);
      const seen = plane.seen.get(instanceId)!.map((s) => `${s.state}/${s.runId}`);
      assert.deepEqual(seen.slice(-2), ["UD_OK/1001", "UD_REG_OK/1001"], seen.join(", "));
      // The setup script ran whole: its here-document's `#` line and its data's checksum.
      const setupLog = await instance.log();
      assert.ok(setupLog.includes(BULKY_SETUP_NOTE), setupLog);
      assert.ok(setupLog.includes(setup.checksumLine), setupLog);
      let github = await instance.github();
      assert.deepEqual(github.runners, {
        [`${instanceId}-1`]: {
          labels: `1001,${poolRunnerLabel("us-east-1", instance.table)}`,
          url: "https://github.com/acme/widgets",
          group: "Default",
        },
      });
      assert.deepEqual(github.calls, [{
        verb: "config",
        token: "valid",
        args: [
          "--unattended",
          "--url",
          "https://github.com/acme/widgets",
          "--name",
          `${instanceId}-1`,
          "--labels",
          `1001,${poolRunnerLabel("us-east-1", instance.table)}`,
          "--no-default-labels",
          "--disableupdate",
          "--replace",
        ],
      }]);
      const signal = await plane.signal(instanceId);
      assert.match(signal!.updatedAt, TIMESTAMP);

      // Heartbeats every few seconds, sampled from here to the second claim.
      const beats: string[] = [];
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const beat = await plane.heartbeat(instanceId);
          if (beat && beats.at(-1) !== beat.updatedAt) beats.push(beat.updatedAt as string);
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
      })();
      const beat = await plane.heartbeat(instanceId);
      assert.deepEqual({ ...beat, updatedAt: "" }, {
        PK: "TYPE#HEARTBEAT",
        SK: `ID#${instanceId}`,
        entityType: "HEARTBEAT",
        identifier: instanceId,
        value: "PING",
        updatedAt: "",
      });
      assert.match(beat!.updatedAt as string, TIMESTAMP);

      // The runner and its job never see the token.
      const [listener, job] = await until("the runner's listener and job", 30_000, async () => {
        const events = (await instance.github()).events;
        const listener = events.find((e) => e.startsWith(`listening ${instanceId}-1 `));
        const job = events.find((e) => e.startsWith(`job ${instanceId}-1 `));
        return listener && job ? [listener, job] : undefined;
      });
      for (const file of ["env-run", "env-job"]) {
        const env = await Deno.readTextFile(`${instance.dir}/github/${file}-${instanceId}-1`);
        assert.ok(!env.includes(instance.token), `${file} holds the token`);
        assert.ok(!env.includes("ACTIONS_RUNNER_INPUT_"), `${file} holds a runner input`);
      }
      // Jobs run as the runner user, with HOME, USER, LANG and umask 022, and passwordless sudo
      // by default (the sudoers file, in the harness).
      const jobEnv = envOf(
        await Deno.readTextFile(`${instance.dir}/github/env-job-${instanceId}-1`),
      );
      const user = instance.runnerUser;
      const home = await runnerHome(user);
      assert.deepEqual(
        [jobEnv.USER, jobEnv.LOGNAME, jobEnv.HOME, jobEnv.LANG],
        [user, user, home, "C.UTF-8"],
      );
      assert.equal(
        (await Deno.readTextFile(`${instance.dir}/github/umask-job-${instanceId}-1`)).trim(),
        "0022",
      );
      assert.equal(await processUser(Number(job.split(" ")[2])), user);
      assert.match(
        await Deno.readTextFile(`${instance.dir}/sudoers.d/90-refresh-runner`),
        new RegExp(`^${user} ALL=\\(ALL\\) NOPASSWD:ALL$`, "m"),
      );

      // Release: the runner, its listener and its job are stopped, the registration removed.
      await expectOk(instance, await plane.release(instanceId, "1001"), "release");
      assert.deepEqual(await plane.signal(instanceId).then((s) => [s!.state, s!.runId]), [
        "UD_REMOVE_REG_REMOVE_RUN_OK",
        "1001",
      ]);
      github = await instance.github();
      assert.deepEqual(github.runners, {});
      assert.deepEqual(github.calls.at(-1), {
        verb: "remove",
        token: "valid",
        args: [],
      });
      assert.ok(github.events.includes(`stopped ${instanceId}-1`), github.events.join("\n"));
      for (const line of [listener, job]) {
        const pid = Number(line.split(" ")[2]);
        assert.ok(!alive(pid), `still alive after release: ${line}`);
      }

      // A second claim registers <id>-2 for the new run id.
      await expectOk(
        instance,
        await plane.claim(instanceId, "1002", { timeoutMs: 60_000 }),
        "claim",
      );
      await until("four heartbeats", 30_000, () => beats.length >= 4);
      sampling = false;
      await sampler;
      const gaps = beats.slice(1).map((b, i) => (Date.parse(b) - Date.parse(beats[i])) / 1000);
      // Every TIMINGS.heartbeatSec (3 s) unless a put takes longer, which a busy machine makes
      // the harness' AWS CLI do; never older than provision's freshness limit (15 s).
      assert.ok(Math.max(...gaps) <= 15, `heartbeat gaps (s): ${gaps.join(", ")}`);
      github = await instance.github();
      assert.deepEqual(Object.keys(github.runners), [`${instanceId}-2`]);
      assert.equal(
        github.runners[`${instanceId}-2`].labels,
        `1002,${poolRunnerLabel("us-east-1", instance.table)}`,
      );
      // Past threshold + 1 minute, the instance powers itself off, which EC2 (the harness's
      // poweroff, for the template's shutdown behaviour) makes a termination.
      assert.equal(await instance.ec2State(), "running");
      assert.equal(await instance.poweroffs(), 0);
      await plane.expire(instanceId, new Date(Date.now() - 2 * 60_000));
      await until(
        "self-termination",
        60_000,
        async () =>
          (await instance.ec2State()) === "terminated" &&
          /powering off \(the instance record's threshold \+ 1 min has passed\)/.test(
            await instance.log(),
          ),
      );
      assert.equal(await instance.poweroffs(), 1);

      // Every call signed with the instance role's credentials from metadata, as AWS checks it.
      assert.deepEqual(
        observer.requests.filter((r) =>
          r.problem !== undefined || r.accessKeyId !==
            instance.imds.credentials.AccessKeyId
        ),
        [],
      );
      // The calls the instance profile must allow (BOOTSTRAP_AWS_ACTIONS), and no other.
      const operations = [...new Set(observer.requests.map((r) => r.operation))].sort();
      // (UpdateItem is for an interruption notice: test/bootstrap_trust_test.ts.)
      assert.deepEqual(operations, ["DynamoDB.GetItem", "DynamoDB.PutItem"]);
      assert.deepEqual(
        BOOTSTRAP_AWS_ACTIONS.map((a) => a.action).sort(),
        ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
      );

      // IMDSv2 only: a token first, every request with it.
      assert.deepEqual(instance.imds.requests[0], {
        method: "PUT",
        path: "/latest/api/token",
        authorized: true,
        status: 200,
      });
      assert.ok(instance.imds.requests.every((r) => r.authorized), "an IMDSv1 request was made");
    },
  });

  const setupFails = t.step({
    name: "bootstrap signals UD_FAILED and says why when the setup script fails",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "setup",
        runId: "2001",
        timings: QUIET_TIMINGS,
        preRunnerScript: "#!/bin/bash\necho installing tools\nexit 3\n",
      });
      tokens.push(instance.token);
      const outcome = await instance.plane.provision(instance.instanceId, "2001");
      assert.equal(outcome.ok, false);
      assert.deepEqual(outcome.ok ? undefined : [outcome.signal?.state, outcome.signal?.runId], [
        "UD_FAILED",
        "2001",
      ]);
      const log = await instance.log();
      assert.match(log, /installing tools/);
      assert.match(
        log,
        /refresh-bootstrap: FAILED at setup: the setup script \S+pre-runner.sh exited with status 3/,
      );
      assert.deepEqual(instance.runnerPackage.requests, [], "the runner was downloaded");
    },
  });

  const registrationFails = t.step({
    name: "bootstrap signals UD_REG_FAILED and says why when registration fails, then only " +
      "terminates itself once expired",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "register",
        runId: "3001",
        timings: { ...QUIET_TIMINGS, selfTerminateCheckSec: 5 },
        tokenInTable: "AAAAWRONGTOKEN",
      });
      tokens.push(instance.token, "AAAAWRONGTOKEN");
      const outcome = await instance.plane.provision(instance.instanceId, "3001");
      assert.deepEqual(outcome.ok ? "ok" : [outcome.signal?.state, outcome.signal?.runId], [
        "UD_REG_FAILED",
        "3001",
      ]);
      assert.match(
        await instance.log(),
        /FAILED at registration: could not register runner i-\w+-1 \(config.sh's output is above\)/,
      );
      const github = await instance.github();
      assert.deepEqual(github.runners, {});
      // Twice: the second time with the token read anew.
      assert.deepEqual(github.calls.map((c) => [c.verb, c.token]), [
        ["config", "invalid"],
        ["config", "invalid"],
      ]);

      // Stopped taking part: no heartbeat any more, but self-termination still watches.
      const beat = await instance.plane.heartbeat(instance.instanceId);
      await new Promise((resolve) => setTimeout(resolve, 6_000));
      assert.deepEqual(await instance.plane.heartbeat(instance.instanceId), beat);
      await instance.plane.expire(instance.instanceId, new Date(Date.now() - 2 * 60_000));
      await until(
        "self-termination after a failure",
        60_000,
        async () => (await instance.ec2State()) === "terminated",
      );
    },
  });

  const checksumMismatch = t.step({
    name: "bootstrap signals UD_FAILED when the runner package's SHA-256 does not match",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "checksum",
        runId: "4001",
        timings: QUIET_TIMINGS,
        sha256: "0".repeat(64),
      });
      tokens.push(instance.token);
      const outcome = await instance.plane.provision(instance.instanceId, "4001");
      assert.deepEqual(outcome.ok ? "ok" : [outcome.signal?.state, outcome.signal?.runId], [
        "UD_FAILED",
        "4001",
      ]);
      assert.match(
        await instance.log(),
        new RegExp(
          `FAILED at runner checksum: SHA-256 of \\S+ is ${instance.runnerPackage.sha256}, ` +
            `expected ${"0".repeat(64)}`,
        ),
      );
      assert.equal(instance.runnerPackage.requests.length, 1);
      assert.deepEqual((await instance.github()).calls, []);
    },
  });

  const outage = t.step({
    name: "bootstrap retries through DynamoDB outages and completes the cycle, for an " +
      "organization on GitHub Enterprise Server with a runner group",
    ...concurrent,
    fn: async () => {
      await using proxy = startFaultProxy({
        target: MOTO_URL,
        only: /^DynamoDB\./,
        faults: ["drop"],
        rate: 1, // DynamoDB unreachable from the start
      });
      await using instance = await bootInstance({
        subnetId,
        name: "outage",
        runId: "5001",
        timings: QUIET_TIMINGS,
        awsEndpoint: proxy.url,
        githubUrl: "https://ghe.example.com/acme",
        runnerGroup: "ci runners",
      });
      tokens.push(instance.token);
      const { plane, instanceId } = instance;
      const provisioning = plane.provision(instanceId, "5001");
      await until("a dropped DynamoDB call", 60_000, () => proxy.injected().length > 0);
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      proxy.rate = 0;
      await expectOk(instance, await provisioning, "provision through an outage");
      assert.deepEqual((await instance.github()).runners, {
        [`${instanceId}-1`]: {
          labels: `5001,${poolRunnerLabel("us-east-1", instance.table)}`,
          url: "https://ghe.example.com/acme",
          group: "ci runners",
        },
      });

      // Unreachable again while the job runs and is released.
      const before = proxy.injected().length;
      proxy.rate = 1;
      const releasing = plane.release(instanceId, "5001");
      await until("a dropped DynamoDB call", 60_000, () => proxy.injected().length > before);
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      proxy.rate = 0;
      await expectOk(instance, await releasing, "release through an outage");
      assert.deepEqual((await instance.github()).runners, {});
      assert.match(await instance.log(), /attempt 1 failed|failed \(\d+ in a row\)/);
    },
  });

  const isolation = t.step({
    name: "a job cannot reach instance metadata, the credentials cache or the table, while the " +
      "bootstrap's own calls still work (strict mode: no sudo), and nothing a job starts outlives " +
      "its run",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "isolation",
        runId: "6001",
        timings: QUIET_TIMINGS,
        jobSudo: false,
      });
      tokens.push(
        instance.token,
        instance.imds.credentials.SecretAccessKey,
        instance.imds.credentials.Token,
      );
      const { plane, instanceId, dir } = instance;
      // The job: read a metadata token, the cached credentials, and write another signal with
      // the bootstrap's own client (a copy, as a job could download one).
      const client = join(dir, "github", "aws.py");
      await Deno.writeTextFile(client, AWS_CLIENT_PY_COMPACT, { mode: 0o644 });
      const cache = join(dir, "boot", "private", "credentials.json");
      await Deno.writeTextFile(
        join(dir, "github", "job-step"),
        [
          'echo "uid $(id -u)"',
          `curl -sS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' ` +
          `'${instance.imds.url}/latest/api/token'; echo "metadata exit $?"`,
          `cat '${cache}'; echo "cache exit $?"`,
          `AWS_ENDPOINT_URL='${MOTO_URL}' python3 -I -S '${client}' us-east-1 '${instance.table}' ` +
          `"$HOME/stolen.json" '${instance.imds.url}' put-signal ${instanceId} UD_REG_FAILED 999; ` +
          'echo "signal exit $?"',
          'sudo -n true; echo "sudo exit $?"',
          // A daemon that leaves the runner's process group, as a job's could.
          `setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $! >'${
            join(dir, "github", "daemon.pid")
          }'`,
        ].join("\n"),
        { mode: 0o644 },
      );
      await expectOk(instance, await plane.provision(instanceId, "6001"), "provision");
      const out = await until("the job step", 60_000, async () => {
        const status = await Deno.readTextFile(
          join(dir, "github", `job-step-${instanceId}-1.status`),
        ).catch(() => undefined);
        return status &&
          await Deno.readTextFile(join(dir, "github", `job-step-${instanceId}-1.out`));
      });
      const uid = (await runnerUid(instance.runnerUser)).toString();
      assert.match(out, new RegExp(`^uid ${uid}$`, "m"));
      assert.match(out, /^curl: \(7\) .*\nmetadata exit 7$/m, out);
      assert.match(out, /Permission denied\ncache exit 1$/m, out);
      assert.match(
        out,
        /AWS call failed \(put-signal\): PUT 127\.0\.0\.1:\d+\/latest\/api\/token: .*Connection refused\nsignal exit 1$/m,
        out,
      );
      assert.match(out, /^sudo exit [1-9]\d*$/m, out);
      assert.ok(!out.includes(instance.imds.credentials.SecretAccessKey));
      // No sudoers file in strict mode; the signal is still the bootstrap's; the packet filter
      // rule is on the runner's uid and the metadata server's port only.
      await assert.rejects(Deno.stat(join(dir, "sudoers.d", "90-refresh-runner")));
      assert.deepEqual(await plane.signal(instanceId).then((s) => [s!.state, s!.runId]), [
        "UD_REG_OK",
        "6001",
      ]);
      const port = new URL(instance.imds.url).port;
      const rules = (await command("iptables", "-w", "10", "-S", "OUTPUT")).split("\n")
        .filter((line) => line.includes(`--dport ${port} `));
      assert.deepEqual(rules, [
        `-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport ${port} -m owner --uid-owner ${uid} ` +
        "-j REJECT --reject-with icmp-port-unreachable",
      ]);
      // The bootstrap still heartbeats and releases (its calls go through as root).
      const before = await plane.heartbeat(instanceId);
      await until(
        "a newer heartbeat",
        30_000,
        async () => (await plane.heartbeat(instanceId))?.updatedAt !== before?.updatedAt,
      );
      const daemon = Number(await Deno.readTextFile(join(dir, "github", "daemon.pid")));
      assert.ok(alive(daemon), "the job's daemon is running");
      await expectOk(instance, await plane.release(instanceId, "6001"), "release");
      // Nothing of the runner user outlives its run.
      assert.ok(!alive(daemon), "the job's daemon survived its run's release");
      await instance.kill();
      const left = (await command("iptables", "-w", "10", "-S", "OUTPUT")).split("\n")
        .filter((line) => line.includes(`--dport ${port} `));
      assert.deepEqual(left, [], "the harness removes the rule");
    },
  });

  const libicu = t.step({
    name: "bootstrap runs the runner's bin/installdependencies.sh when libicu is missing, " +
      "before config.sh",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "libicu",
        runId: "7001",
        timings: QUIET_TIMINGS,
        libicu: "missing",
      });
      tokens.push(instance.token);
      await expectOk(
        instance,
        await instance.plane.provision(instance.instanceId, "7001"),
        "provision",
      );
      const events = (await instance.github()).events;
      assert.equal(events[0], "installdependencies", events.join("\n"));
      assert.deepEqual(await instance.installed(), [
        "apt-get update",
        "apt-get install -y libkrb5-3 zlib1g",
        "apt-get install -y liblttng-ust1",
        "apt-get install -y libicu76",
      ]);
      assert.match(
        await instance.log(),
        /libicu is missing: running the runner's bin\/installdependencies.sh/,
      );
    },
  });

  const libicuAmazonLinux = t.step({
    name: "bootstrap installs libicu with dnf on Amazon Linux 2023, which the runner's " +
      "bin/installdependencies.sh does not know, in one transaction",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "al2023",
        runId: "7101",
        timings: QUIET_TIMINGS,
        libicu: "missing",
        osRelease: 'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\n',
      });
      tokens.push(instance.token);
      await expectOk(
        instance,
        await instance.plane.provision(instance.instanceId, "7101"),
        "provision",
      );
      // One dnf transaction, before the runner's installdependencies.sh would be needed (it does
      // not know the system): dnf reads its repositories' metadata once.
      assert.deepEqual(await instance.installed(), ["dnf install -y libicu"]);
      assert.ok(!(await instance.github()).events.includes("installdependencies"));
      assert.match(await instance.log(), /installing libicu with dnf, in one transaction/);
    },
  });

  const listener = t.step({
    name: "bootstrap signals UD_REG_OK only once the runner listens for jobs, restarting a " +
      "runner that exits first, and UD_REG_FAILED after 3 starts",
    ...concurrent,
    fn: async () => {
      await using slow = await bootInstance({
        subnetId,
        name: "listen",
        runId: "8001",
        timings: QUIET_TIMINGS,
      });
      await using refused = await bootInstance({
        subnetId,
        name: "refused",
        runId: "8101",
        timings: QUIET_TIMINGS,
      });
      tokens.push(slow.token, refused.token);
      // Refused once, then 4 s to connect: UD_REG_OK must wait for the second start's line.
      // The runner user reads and writes these.
      const control = async (path: string, text: string) => {
        await Deno.writeTextFile(path, text);
        await Deno.chmod(path, 0o666);
      };
      await control(join(slow.dir, "github", "refuse-listener"), "1");
      await control(join(slow.dir, "github", "listen-delay"), "4");
      await control(join(refused.dir, "github", "refuse-listener"), "9");
      const [ok, failed] = await Promise.all([
        slow.plane.provision(slow.instanceId, "8001"),
        refused.plane.provision(refused.instanceId, "8101"),
      ]);
      await expectOk(slow, ok, "provision");
      const events = (await slow.github()).events;
      assert.deepEqual(
        events.map((e) => e.split(" ").slice(0, 2).join(" ")),
        [
          `refused ${slow.instanceId}-1`,
          `listening ${slow.instanceId}-1`,
          `job ${slow.instanceId}-1`,
        ]
          .slice(0, events.length),
      );
      assert.ok(events.some((e) => e.startsWith("listening ")), events.join("\n"));
      assert.match(await slow.log(), /the runner exited before listening for jobs/);

      assert.deepEqual(failed.ok ? "ok" : [failed.signal?.state, failed.signal?.runId], [
        "UD_REG_FAILED",
        "8101",
      ]);
      assert.match(
        await refused.log(),
        /FAILED at runner start: runner i-\w+-1 exited or never listened for jobs, 3 starts in all/,
      );
      const github = await refused.github();
      assert.equal(github.events.filter((e) => e.startsWith("refused ")).length, 3);
      // Its registration is removed before giving up.
      assert.deepEqual(github.runners, {});
      assert.deepEqual(github.calls.map((c) => c.verb), ["config", "remove"]);
    },
  });

  const systemdRoot = t.step({
    name: "under systemd the unit runs the agent and the user data exits; with job user root " +
      "and metadata open, jobs run as root and reach instance metadata",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "systemd",
        runId: "9001",
        timings: QUIET_TIMINGS,
        systemd: true,
        jobUser: "root",
        jobMetadata: "open",
      });
      tokens.push(instance.token);
      const { plane, instanceId, dir } = instance;
      await Deno.writeTextFile(
        join(dir, "github", "job-step"),
        `curl -sS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' ` +
          `'${instance.imds.url}/latest/api/token' >/dev/null; echo "metadata exit $?"\n`,
      );
      assert.equal(await instance.exited, 0);
      assert.deepEqual(await instance.systemctl(), [
        "daemon-reload",
        "start --no-block refresh-runner.service",
      ]);
      const unit = await Deno.readTextFile(join(dir, "systemd", "refresh-runner.service"));
      assert.match(
        unit,
        new RegExp(`^ExecStart=/bin/bash ${dir}/boot/private/bootstrap.sh --agent$`, "m"),
      );
      assert.match(unit, /^KillMode=control-group$/m);
      assert.match(unit, new RegExp(`^EnvironmentFile=${dir}/boot/private/environment$`, "m"));
      await expectOk(instance, await plane.provision(instanceId, "9001"), "provision");
      const out = await until(
        "the job step",
        60_000,
        () =>
          Deno.readTextFile(join(dir, "github", `job-step-${instanceId}-1.out`)).catch(() =>
            undefined
          ),
      );
      assert.equal(out, "metadata exit 0\n");
      const jobEnv = envOf(
        await Deno.readTextFile(join(dir, "github", `env-job-${instanceId}-1`)),
      );
      assert.deepEqual([jobEnv.USER, jobEnv.HOME, jobEnv.RUNNER_ALLOW_RUNASROOT], [
        "root",
        "/root",
        "1",
      ]);
      const port = new URL(instance.imds.url).port;
      assert.deepEqual(
        (await command("iptables", "-w", "10", "-S", "OUTPUT")).split("\n")
          .filter((line) => line.includes(`--dport ${port} `)),
        [],
      );
      assert.match(await instance.log(), /instance metadata is open to jobs/);
    },
  });

  await Promise.all([
    systemdRoot,
    cycle,
    setupFails,
    registrationFails,
    checksumMismatch,
    outage,
    isolation,
    libicu,
    libicuAmazonLinux,
    listener,
  ]);
  await watcher.stop();

  await t.step("the registration token is never in a process's arguments nor in the script", () => {
    assert.ok(watcher.samples > 10, `only ${watcher.samples} samples of the process table`);
    assert.deepEqual(watcher.hits, []);
    for (const script of scripts) {
      for (const token of tokens) assert.ok(!script.includes(token));
    }
  });
});
