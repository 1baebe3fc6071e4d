/**
 * The generated instance bootstrap (lib/bootstrap.ts): what the generator bakes in and refuses,
 * shellcheck on spec variants, and the script executed for real by bash against moto, a fake
 * instance-metadata server, a fake runner package and a control plane that plays provision,
 * claim and release as PROTOCOL.md describes.
 */
import assert from "node:assert/strict";
import { bootstrapScript, type BootstrapSpec, specProblems } from "../lib/bootstrap.ts";
import { shellcheck } from "./support/tools_bin.ts";

const SHA_X64 = "0123456789abcdef".repeat(4);
const SHA_ARM64 = "fedcba9876543210".repeat(4);

const SPEC: BootstrapSpec = {
  table: "acme-widgets-ci-table",
  region: "eu-west-1",
  githubUrl: "https://github.com/acme/widgets",
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

Deno.test("bootstrapScript lists every invalid field at once", () => {
  const bad: BootstrapSpec = {
    table: "x",
    region: "moon",
    githubUrl: "github.com/acme",
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
  assert.equal(problems.length, 8);
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
    const result = await shellcheck(bootstrapScript(spec));
    assert.equal(result, "", `shellcheck found problems for ${JSON.stringify(spec)}`);
  }
});
