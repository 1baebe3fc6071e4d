/**
 * Decides which GitHub Actions runner the generated bootstrap installs, and finds the SHA-256
 * checksums of its Linux packages (`actions-runner-linux-<x64|arm64>-<version>.tar.gz`) in the
 * `actions/runner` release of that version, so the bootstrap can verify what it downloads. Reads
 * only; writes nothing.
 *
 * The bootstrap registers runners with updates disabled, and GitHub requires such a runner to
 * install each new release within 30 days of it, or stops sending it jobs ("About self-hosted
 * runners", GitHub Docs: "you will be required to update your runner version within 30 days of a
 * new version being made available"). So:
 * - `latest` (the default) resolves the newest release on every run, with one
 *   `GET /repos/actions/runner/releases/latest`, which gives both the version and its checksums;
 *   a new release makes new user data, so a new template version, and the rollout drains idle
 *   instances of the old one;
 * - a pinned version is checked against that same newest release (one read): older than a release
 *   published more than {@link UPDATE_WINDOW_DAYS} days ago is a warning (GitHub refuses it). When
 *   GitHub cannot be asked (no credential, an error), that is a warning too, never a failure: the
 *   pinned version and given checksums are all the template needs.
 *
 * Two places publish the checksums, both read from the release:
 * - the asset's `digest` (`sha256:<hex>`), which GitHub computes for every release asset uploaded
 *   since June 2025 ("Releases now expose digests for release assets", GitHub changelog);
 * - the release notes, which carry one checksum per package between
 *   `<!-- BEGIN SHA linux-x64 -->` and `<!-- END SHA linux-x64 -->` markers (the runner's release
 *   template, used for years, so older releases have them too).
 * When both are present they must agree. Only the markers are read from the notes: they hold
 * other 64-digit hex strings too (commit ids), so a plain pattern could pick the wrong one.
 *
 * github.com hosts these releases; a GitHub Enterprise Server API does not (config.ts requires
 * a pinned version and its checksums there, and the staleness check is not made).
 *
 * @module
 */
import type { Octokit } from "npm:@octokit/rest@22.0.1";
import type { RunnerChecksums } from "./user_data.ts";

export const RUNNER_REPOSITORY = { owner: "actions", repo: "runner" } as const;
export const ARCHITECTURES = ["x64", "arm64"] as const;
export type Arch = typeof ARCHITECTURES[number];

/** The package file of an architecture and version. */
export function packageName(arch: Arch, version: string): string {
  return `actions-runner-linux-${arch}-${version}.tar.gz`;
}

/** The part of a release this module reads. */
export interface ReleaseData {
  tag_name?: string;
  /** When the release was published (ISO 8601); drafts have none. */
  published_at?: string | null;
  body?: string | null;
  assets?: { name: string; digest?: string | null }[];
}

/** Where each checksum was found. */
export type ChecksumSources = Record<Arch, "asset digest" | "release notes">;

/**
 * The checksums a release publishes for both packages, or the reasons one cannot be had (one per
 * architecture, saying what was looked for).
 */
export function checksumsFromRelease(
  release: ReleaseData,
  version: string,
): { checksums: RunnerChecksums; sources: ChecksumSources } | { problems: string[] } {
  const problems: string[] = [];
  const checksums: Partial<RunnerChecksums> = {};
  const sources: Partial<ChecksumSources> = {};
  for (const arch of ARCHITECTURES) {
    const name = packageName(arch, version);
    const asset = release.assets?.find((a) => a.name === name);
    const digest = /^sha256:([0-9a-f]{64})$/i.exec(asset?.digest ?? "")?.[1]?.toLowerCase();
    const marker = new RegExp(
      `<!-- BEGIN SHA linux-${arch} -->\\s*([0-9a-fA-F]{64})\\s*<!-- END SHA linux-${arch} -->`,
    ).exec(release.body ?? "")?.[1]?.toLowerCase();
    if (digest && marker && digest !== marker) {
      problems.push(
        `${name}: the asset's digest ${digest} and the release notes' checksum ${marker} differ`,
      );
    } else if (digest || marker) {
      checksums[arch] = (digest ?? marker)!;
      sources[arch] = digest ? "asset digest" : "release notes";
    } else {
      problems.push(
        `${name}: no SHA-256 published (no asset digest, no <!-- BEGIN SHA linux-${arch} --> marker in the release notes)`,
      );
    }
  }
  if (problems.length > 0) return { problems };
  return { checksums: checksums as RunnerChecksums, sources: sources as ChecksumSources };
}

/**
 * Looks the checksums of a runner version up in its `actions/runner` release. Throws an error
 * saying what failed and how to give the checksums instead.
 */
export async function resolveRunnerChecksums(
  github: Octokit | undefined,
  version: string,
  apiUrl: string,
): Promise<{ checksums: RunnerChecksums; sources: ChecksumSources }> {
  const instead = "or give both --runner-sha256-x64 and --runner-sha256-arm64";
  const tag = `v${version}`;
  if (!github) {
    throw new Error(
      `cannot look up the checksums of runner ${version} in the actions/runner release without ` +
        `a GitHub credential: set GITHUB_TOKEN or a GitHub App, ${instead}`,
    );
  }
  let release: ReleaseData;
  try {
    release = (await github.rest.repos.getReleaseByTag({ ...RUNNER_REPOSITORY, tag })).data;
  } catch (error) {
    const status = (error as { status?: number }).status;
    if (status === 404) {
      throw new Error(
        `actions/runner has no release ${tag} at ${apiUrl}; check --runner-version (a released ` +
          `version like 2.334.0), ${instead}`,
      );
    }
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `cannot read the actions/runner release ${tag} at ${apiUrl}` +
        `${status ? ` (GitHub answered ${status})` : ""}: ${message}; ${instead}`,
    );
  }
  const found = checksumsFromRelease(release, version);
  if ("problems" in found) {
    throw new Error(
      `the actions/runner release ${tag} does not give the checksums refresh needs: ` +
        `${found.problems.join("; ")}; ${instead}`,
    );
  }
  return found;
}

/** The `--runner-version` that follows actions/runner's newest release. */
export const LATEST = "latest";

/** Days GitHub gives a runner with updates disabled to install a newer release. */
export const UPDATE_WINDOW_DAYS = 30;

const DAY_MS = 24 * 3600_000;

/** What the desired state asks for: `latest` or a version, with or without its checksums. */
export interface RunnerRequest {
  version: string;
  sha256?: RunnerChecksums;
}

/** The runner the bootstrap installs, where its checksums came from, and what GitHub said. */
export interface ResolvedRunner {
  version: string;
  checksums: RunnerChecksums;
  checksumsFrom: ChecksumSources | "given";
  /** actions/runner's newest release, when GitHub was asked and answered. */
  newest?: { version: string; publishedAt?: string };
  /** Said in the report and the job summary; never a failure. */
  warnings: string[];
}

/** Where the runner's releases are read, and the clock the staleness check uses. */
export interface RunnerLookup {
  github: Octokit | undefined;
  apiUrl: string;
  /** A GitHub Enterprise Server API, which does not hold actions/runner: nothing is read. */
  enterprise: boolean;
  now: Date;
}

/**
 * The runner to install: the newest release for `latest` (one read, which also gives its
 * checksums), else the pinned version with its given checksums or those of its release (one
 * read), checked against the newest release (one more read; when that fails, a warning).
 */
export async function resolveRunner(
  request: RunnerRequest,
  lookup: RunnerLookup,
): Promise<ResolvedRunner> {
  if (request.version === LATEST) return await resolveLatest(lookup);
  const { version } = request;
  let checksums = request.sha256;
  let checksumsFrom: ResolvedRunner["checksumsFrom"] = "given";
  if (!checksums) {
    ({ checksums, sources: checksumsFrom } = await resolveRunnerChecksums(
      lookup.github,
      version,
      lookup.apiUrl,
    ));
  }
  const resolved: ResolvedRunner = { version, checksums, checksumsFrom, warnings: [] };
  if (lookup.enterprise) return resolved;
  let newest: { version: string; publishedAt?: string };
  try {
    newest = newestOf(await readLatest(lookup));
  } catch (error) {
    resolved.warnings.push(
      `cannot check that runner ${version} is still accepted by GitHub (runners with updates ` +
        `disabled must install a newer release within ${UPDATE_WINDOW_DAYS} days): ` +
        `${(error as Error).message}; the template uses ${version} as pinned`,
    );
    return resolved;
  }
  resolved.newest = newest;
  const stale = staleness(version, newest, lookup.now);
  if (stale) resolved.warnings.push(stale);
  return resolved;
}

/**
 * The warning for a pinned version GitHub no longer sends jobs to: older than a release published
 * more than {@link UPDATE_WINDOW_DAYS} days before `now`; undefined otherwise.
 */
export function staleness(
  version: string,
  newest: { version: string; publishedAt?: string },
  now: Date,
): string | undefined {
  if (compareVersions(version, newest.version) >= 0 || !newest.publishedAt) return undefined;
  const published = Date.parse(newest.publishedAt);
  if (Number.isNaN(published)) return undefined;
  const days = Math.floor((now.getTime() - published) / DAY_MS);
  if (days < UPDATE_WINDOW_DAYS) return undefined;
  return `runner ${version} is older than actions/runner ${newest.version}, published ` +
    `${newest.publishedAt.slice(0, 10)} (${days} days ago): GitHub stops sending jobs to runners ` +
    `with updates disabled ${UPDATE_WINDOW_DAYS} days after a newer release, so new instances ` +
    `register and never get a job; set --runner-version latest (the default), or ` +
    `${newest.version} and its checksums`;
}

/** Orders two x.y.z versions numerically: negative when `a` is older. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The newest release's version and checksums, from one read. */
async function resolveLatest(lookup: RunnerLookup): Promise<ResolvedRunner> {
  const release = await readLatest(lookup);
  const newest = newestOf(release);
  const found = checksumsFromRelease(release, newest.version);
  if ("problems" in found) {
    throw new Error(
      `the newest actions/runner release ${release.tag_name} does not give the checksums ` +
        `refresh needs: ${found.problems.join("; ")}; set --runner-version to an earlier ` +
        "version, or give it with --runner-sha256-x64 and --runner-sha256-arm64",
    );
  }
  return {
    version: newest.version,
    checksums: found.checksums,
    checksumsFrom: found.sources,
    newest,
    warnings: [],
  };
}

/** `GET /repos/actions/runner/releases/latest`; throws saying what failed. */
async function readLatest(lookup: RunnerLookup): Promise<ReleaseData> {
  const { github, apiUrl } = lookup;
  if (!github) {
    throw new Error(
      "no GitHub credential to read actions/runner's newest release with: set GITHUB_TOKEN or a " +
        "GitHub App, or pin --runner-version and give --runner-sha256-x64 and " +
        "--runner-sha256-arm64",
    );
  }
  try {
    return (await github.rest.repos.getLatestRelease(RUNNER_REPOSITORY)).data;
  } catch (error) {
    const status = (error as { status?: number }).status;
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `cannot read actions/runner's newest release at ${apiUrl}/repos/actions/runner/releases/latest` +
        `${status ? ` (GitHub answered ${status})` : ""}: ${message}`,
    );
  }
}

/** The version (`v2.334.0` -> `2.334.0`) and publication time of a release. */
function newestOf(release: ReleaseData): { version: string; publishedAt?: string } {
  const version = /^v?(\d+\.\d+\.\d+)$/.exec(release.tag_name ?? "")?.[1];
  if (!version) {
    throw new Error(
      `actions/runner's newest release has the tag ${JSON.stringify(release.tag_name)}, ` +
        "not a version like v2.334.0",
    );
  }
  return { version, ...(release.published_at ? { publishedAt: release.published_at } : {}) };
}
