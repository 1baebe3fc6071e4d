/**
 * Finds the SHA-256 checksums of the GitHub Actions runner's Linux packages
 * (`actions-runner-linux-<x64|arm64>-<version>.tar.gz`) in the `actions/runner` release of a
 * version, so the generated bootstrap can verify what it downloads. Reads only; writes nothing.
 *
 * Two places publish them, both read from one `GET /repos/actions/runner/releases/tags/v<version>`:
 * - the asset's `digest` (`sha256:<hex>`), which GitHub computes for every release asset uploaded
 *   since June 2025 ("Releases now expose digests for release assets", GitHub changelog);
 * - the release notes, which carry one checksum per package between
 *   `<!-- BEGIN SHA linux-x64 -->` and `<!-- END SHA linux-x64 -->` markers (the runner's release
 *   template, used for years, so older releases have them too).
 * When both are present they must agree. Only the markers are read from the notes: they hold
 * other 64-digit hex strings too (commit ids), so a plain pattern could pick the wrong one.
 *
 * github.com hosts these releases; a GitHub Enterprise Server API does not (config.ts requires
 * the checksums there instead).
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
