import assert from "node:assert/strict";
import { Octokit } from "npm:@octokit/rest@22.0.1";
import {
  checksumsFromRelease,
  compareVersions,
  packageName,
  type ReleaseData,
  resolveRunner,
  resolveRunnerChecksums,
  type RunnerLookup,
  staleness,
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

/** A release of `version` published at `publishedAt`, checksums in its assets' digests. */
function published(version: string, publishedAt: string, sha = X64): FakeRelease {
  return {
    repository: "actions/runner",
    tag_name: `v${version}`,
    published_at: publishedAt,
    body: "",
    assets: [
      { name: packageName("x64", version), digest: `sha256:${sha}` },
      { name: packageName("arm64", version), digest: `sha256:${ARM64}` },
    ],
  };
}

const NOW = new Date("2026-06-10T12:00:00Z");
/** 2.334.0 then 2.335.0, published 41 days before NOW; and an older tag of another repository. */
const RELEASES = [
  published("2.334.0", "2026-03-02T09:00:00Z"),
  published("2.335.0", "2026-04-30T09:00:00Z", COMMIT),
  { ...published("9.9.9", "2026-06-01T09:00:00Z"), repository: "someone/else" },
];

function lookupOn(url: string, overrides: Partial<RunnerLookup> = {}): RunnerLookup {
  return {
    github: new Octokit({ baseUrl: url, auth: PAT, log: silent }),
    apiUrl: url,
    enterprise: false,
    now: NOW,
    ...overrides,
  };
}

const requested = (gh: { requests: { method: string; path: string }[] }) =>
  gh.requests.map((r) => `${r.method} ${r.path}`);

Deno.test("resolveRunner takes the newest release and its checksums in one read when the version is latest", async () => {
  await using gh = startFakeGithub({ tokens: [PAT], releases: RELEASES });
  const resolved = await resolveRunner({ version: "latest" }, lookupOn(gh.url));
  assert.deepEqual(resolved, {
    version: "2.335.0",
    checksums: { x64: COMMIT, arm64: ARM64 },
    checksumsFrom: { x64: "asset digest", arm64: "asset digest" },
    newest: { version: "2.335.0", publishedAt: "2026-04-30T09:00:00Z" },
    warnings: [],
  });
  assert.deepEqual(requested(gh), ["GET /repos/actions/runner/releases/latest"]);
});

Deno.test("resolveRunner fails saying what to do when the newest release cannot be read for latest", async (t) => {
  await using gh = startFakeGithub({ tokens: [PAT], releases: RELEASES });
  await t.step("GitHub answers an error", async () => {
    gh.fail(/^GET \/repos\/actions\/runner\/releases\/latest$/, { status: 502 });
    await assert.rejects(
      () => resolveRunner({ version: "latest" }, lookupOn(gh.url)),
      new RegExp(
        `^Error: cannot read actions/runner's newest release at ${gh.url}/repos/actions/runner/releases/latest \\(GitHub answered 502\\): `,
      ),
    );
  });
  await t.step("no GitHub credential", async () => {
    await assert.rejects(
      () => resolveRunner({ version: "latest" }, lookupOn(gh.url, { github: undefined })),
      /^Error: no GitHub credential to read actions\/runner's newest release with: set GITHUB_TOKEN or a GitHub App, or pin --runner-version and give --runner-sha256-x64 and --runner-sha256-arm64$/,
    );
  });
  await t.step("the newest release has no checksums", async () => {
    await using bare = startFakeGithub({
      tokens: [PAT],
      releases: [{ ...published("2.336.0", "2026-06-01T00:00:00Z"), assets: [] }],
    });
    await assert.rejects(
      () => resolveRunner({ version: "latest" }, lookupOn(bare.url)),
      /^Error: the newest actions\/runner release v2\.336\.0 does not give the checksums refresh needs: actions-runner-linux-x64-2\.336\.0\.tar\.gz: no SHA-256 published/,
    );
  });
});

Deno.test("resolveRunner warns when a pinned version is older than a release published more than 30 days ago", async () => {
  await using gh = startFakeGithub({ tokens: [PAT], releases: RELEASES });
  const sha256 = { x64: X64, arm64: ARM64 };
  const resolved = await resolveRunner({ version: "2.334.0", sha256 }, lookupOn(gh.url));
  assert.equal(resolved.version, "2.334.0");
  assert.deepEqual(resolved.checksums, sha256);
  assert.equal(resolved.checksumsFrom, "given");
  assert.deepEqual(resolved.warnings, [
    "runner 2.334.0 is older than actions/runner 2.335.0, published 2026-04-30 (41 days ago): " +
    "GitHub stops sending jobs to runners with updates disabled 30 days after a newer release, " +
    "so new instances register and never get a job; set --runner-version latest (the default), " +
    "or 2.335.0 and its checksums",
  ]);
  // Given checksums: the staleness check is the only read.
  assert.deepEqual(requested(gh), ["GET /repos/actions/runner/releases/latest"]);
});

Deno.test("resolveRunner reads a pinned version's release and the newest one when no checksums are given", async () => {
  await using gh = startFakeGithub({ tokens: [PAT], releases: RELEASES });
  const resolved = await resolveRunner({ version: "2.335.0" }, lookupOn(gh.url));
  assert.deepEqual(resolved.checksums, { x64: COMMIT, arm64: ARM64 });
  assert.deepEqual(resolved.warnings, [], "2.335.0 is the newest release");
  assert.deepEqual(requested(gh), [
    "GET /repos/actions/runner/releases/tags/v2.335.0",
    "GET /repos/actions/runner/releases/latest",
  ]);
});

Deno.test("resolveRunner warns, and does not fail, when the staleness check cannot reach GitHub", async (t) => {
  await using gh = startFakeGithub({ tokens: [PAT], releases: RELEASES });
  const sha256 = { x64: X64, arm64: ARM64 };
  await t.step("an error answer", async () => {
    gh.fail(/^GET \/repos\/actions\/runner\/releases\/latest$/, { status: 500 });
    const resolved = await resolveRunner({ version: "2.334.0", sha256 }, lookupOn(gh.url));
    assert.deepEqual(resolved.checksums, sha256);
    assert.equal(resolved.warnings.length, 1);
    assert.match(
      resolved.warnings[0],
      /^cannot check that runner 2\.334\.0 is still accepted by GitHub \(runners with updates disabled must install a newer release within 30 days\): cannot read .* \(GitHub answered 500\): .*; the template uses 2\.334\.0 as pinned$/,
    );
  });
  await t.step("no credential", async () => {
    const resolved = await resolveRunner(
      { version: "2.334.0", sha256 },
      lookupOn(gh.url, { github: undefined }),
    );
    assert.match(
      resolved.warnings[0],
      /^cannot check that runner 2\.334\.0 .*no GitHub credential/,
    );
  });
});

Deno.test("resolveRunner reads nothing with GitHub Enterprise Server, whose API has no actions/runner", async () => {
  await using gh = startFakeGithub({ tokens: [PAT], releases: RELEASES });
  const sha256 = { x64: X64, arm64: ARM64 };
  const resolved = await resolveRunner(
    { version: "2.300.0", sha256 },
    lookupOn(gh.url, { enterprise: true }),
  );
  assert.deepEqual(resolved, {
    version: "2.300.0",
    checksums: sha256,
    checksumsFrom: "given",
    warnings: [],
  });
  assert.deepEqual(requested(gh), []);
});

Deno.test("staleness warns from 30 days after the newer release, not before, and not for newer pins", () => {
  const newest = { version: "2.335.0", publishedAt: "2026-05-01T12:00:00Z" };
  const at = (iso: string) => staleness("2.334.0", newest, new Date(iso));
  assert.equal(at("2026-05-31T11:59:59Z"), undefined, "29 days and a bit");
  assert.match(at("2026-05-31T12:00:00Z")!, /published 2026-05-01 \(30 days ago\)/);
  assert.equal(staleness("2.335.0", newest, NOW), undefined);
  assert.equal(staleness("2.336.0", newest, NOW), undefined);
  assert.equal(staleness("2.334.0", { version: "2.335.0" }, NOW), undefined, "no date: no claim");
});

Deno.test("compareVersions orders versions by number, not by text", () => {
  assert.ok(compareVersions("2.99.0", "2.100.0") < 0);
  assert.ok(compareVersions("2.334.1", "2.334.0") > 0);
  assert.equal(compareVersions("2.334.0", "2.334.0"), 0);
  assert.ok(compareVersions("1.999.999", "2.0.0") < 0);
});
