import assert from "node:assert/strict";
import { Octokit } from "npm:@octokit/rest@22.0.1";
import {
  checksumsFromRelease,
  packageName,
  type ReleaseData,
  resolveRunnerChecksums,
} from "../lib/runner_release.ts";
import { type FakeRelease, startFakeGithub } from "./support/github.ts";

const VERSION = "2.334.0";
const X64 = "4f6a0fbfe8ccc49ba0dd6e4b47d9e1d85d4cdaee4a8e12f2e19fa3bf5aa8f9a1";
const ARM64 = "9b2b5f6e7a0c8d11c62c1f0b6a8d3e5f4c2b1a09e8d7c6b5a4f3e2d1c0b9a887";
const COMMIT = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const PAT = "ghp_ReleaseTestToken000000000000000000000";
const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** Release notes as actions/runner writes them: other hex strings, then the markers. */
function notes(x64 = X64, arm64 = ARM64): string {
  return [
    "## What's Changed",
    `* Bump something (${COMMIT})`,
    "## SHA-256 Checksums",
    `- actions-runner-linux-x64-${VERSION}.tar.gz <!-- BEGIN SHA linux-x64 -->${x64}<!-- END SHA linux-x64 -->`,
    `- actions-runner-linux-arm64-${VERSION}.tar.gz <!-- BEGIN SHA linux-arm64 -->${arm64}<!-- END SHA linux-arm64 -->`,
  ].join("\n");
}

function release(overrides: Partial<ReleaseData> = {}): ReleaseData {
  return {
    tag_name: `v${VERSION}`,
    body: notes(),
    assets: [
      { name: packageName("x64", VERSION), digest: `sha256:${X64}` },
      { name: packageName("arm64", VERSION), digest: `sha256:${ARM64}` },
    ],
    ...overrides,
  };
}

Deno.test("checksumsFromRelease takes the asset digests when the release has them", () => {
  const found = checksumsFromRelease(release({ body: "" }), VERSION);
  assert.deepEqual(found, {
    checksums: { x64: X64, arm64: ARM64 },
    sources: { x64: "asset digest", arm64: "asset digest" },
  });
});

Deno.test("checksumsFromRelease reads the markers of older releases, not other hex strings", () => {
  const found = checksumsFromRelease(release({ assets: [] }), VERSION);
  assert.deepEqual(found, {
    checksums: { x64: X64, arm64: ARM64 },
    sources: { x64: "release notes", arm64: "release notes" },
  });
  // Digests and markers given in capitals are the same checksums.
  const upper = checksumsFromRelease(release({ body: notes(X64.toUpperCase()) }), VERSION);
  assert.deepEqual("checksums" in upper && upper.checksums.x64, X64);
});

Deno.test("checksumsFromRelease refuses digests and notes that disagree", () => {
  const found = checksumsFromRelease(release({ body: notes(X64, COMMIT) }), VERSION);
  assert.deepEqual(found, {
    problems: [
      `actions-runner-linux-arm64-${VERSION}.tar.gz: the asset's digest ${ARM64} and the release notes' checksum ${COMMIT} differ`,
    ],
  });
});

Deno.test("checksumsFromRelease says which package has no published checksum", () => {
  const found = checksumsFromRelease(
    release({ body: notes().split("\n").slice(0, 4).join("\n"), assets: [] }),
    VERSION,
  );
  assert.deepEqual(found, {
    problems: [
      `actions-runner-linux-arm64-${VERSION}.tar.gz: no SHA-256 published (no asset digest, no <!-- BEGIN SHA linux-arm64 --> marker in the release notes)`,
    ],
  });
});

const FAKE_RELEASE: FakeRelease = {
  repository: "actions/runner",
  tag_name: `v${VERSION}`,
  body: notes(),
  assets: [
    { name: packageName("x64", VERSION), digest: `sha256:${X64}` },
    { name: packageName("arm64", VERSION), digest: null },
  ],
};

Deno.test("resolveRunnerChecksums reads the release through Octokit", async () => {
  await using gh = startFakeGithub({ tokens: [PAT], releases: [FAKE_RELEASE] });
  const github = new Octokit({ baseUrl: gh.url, auth: PAT, log: silent });
  const found = await resolveRunnerChecksums(github, VERSION, gh.url);
  assert.deepEqual(found, {
    checksums: { x64: X64, arm64: ARM64 },
    sources: { x64: "asset digest", arm64: "release notes" },
  });
  assert.deepEqual(gh.requests.map((r) => `${r.method} ${r.path}`), [
    `GET /repos/actions/runner/releases/tags/v${VERSION}`,
  ]);
});

Deno.test("resolveRunnerChecksums fails clearly when the release cannot give them", async (t) => {
  await using gh = startFakeGithub({
    tokens: [PAT],
    releases: [FAKE_RELEASE, { ...FAKE_RELEASE, tag_name: "v2.333.0", body: "", assets: [] }],
  });
  const github = new Octokit({ baseUrl: gh.url, auth: PAT, log: silent });
  const instead = "or give both --runner-sha256-x64 and --runner-sha256-arm64";
  await t.step("no such release", async () => {
    await assert.rejects(
      () => resolveRunnerChecksums(github, "2.999.0", gh.url),
      new Error(
        `actions/runner has no release v2.999.0 at ${gh.url}; check --runner-version (a released version like 2.334.0), ${instead}`,
      ),
    );
  });
  await t.step("a release without checksums", async () => {
    await assert.rejects(
      () => resolveRunnerChecksums(github, "2.333.0", gh.url),
      /^Error: the actions\/runner release v2\.333\.0 does not give the checksums refresh needs: actions-runner-linux-x64-2\.333\.0\.tar\.gz: no SHA-256 published .*; or give both/,
    );
  });
  await t.step("no GitHub credential", async () => {
    await assert.rejects(
      () => resolveRunnerChecksums(undefined, VERSION, gh.url),
      new Error(
        `cannot look up the checksums of runner ${VERSION} in the actions/runner release without a GitHub credential: set GITHUB_TOKEN or a GitHub App, ${instead}`,
      ),
    );
  });
});
