/**
 * What the end-to-end pool harnesses share (test/support/warm_harness.ts, test/support/demo.ts,
 * test/refresh_pool_test.ts): moto's clients, the fake runner release (the fake GitHub serving
 * actions/runner's release of the fake runner package, which accepts only the registration token
 * GitHub handed out), refresh's entry run in this process, provision's CreateFleet launch, and
 * what an instance boots with (its tags, the user data of the template's default version).
 */
import { join } from "node:path";
import {
  CreateFleetCommand,
  type CreateFleetCommandOutput,
  DescribeInstancesCommand,
  DescribeLaunchTemplateVersionsCommand,
  EC2Client,
  type LaunchTemplateVersion,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { SQSClient } from "npm:@aws-sdk/client-sqs@3.1169.0";
import { DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { sha256 } from "../../lib/contract.ts";
import { readBounded } from "../../lib/inputs.ts";
import type { RunReport } from "../../lib/report.ts";
import { packageName } from "../../lib/runner_release.ts";
import { PLACEHOLDER_RUNNER_VERSION, userDataContent } from "../../lib/user_data.ts";
import { main } from "../../refresh.ts";
import { baseArgs, TEST_PAT } from "./aws.ts";
import { type FakeGithub, startFakeGithub } from "./github.ts";
import { AWS_ENV, MOTO_URL, type Network } from "./moto.ts";
import { type FakeRunnerPackage, startFakeRunnerPackage } from "./runner_package.ts";

/** The pool's table and launch template, as refresh names them for acme/widgets. */
export const TABLE = "acme-widgets-ci-table";
export const TEMPLATE = "acme-widgets-ci-launch-template";
export const REGION = "us-east-1";

/** Clients of moto's EC2, SQS and DynamoDB (with lib-dynamodb's marshalling). */
export interface MotoClients {
  ec2: EC2Client;
  sqs: SQSClient;
  ddb: DynamoDBDocumentClient;
  destroy(): void;
}

export function motoClients(): MotoClients {
  const config = {
    endpoint: MOTO_URL,
    region: REGION,
    credentials: {
      accessKeyId: AWS_ENV.AWS_ACCESS_KEY_ID,
      secretAccessKey: AWS_ENV.AWS_SECRET_ACCESS_KEY,
    },
  };
  const ec2 = new EC2Client(config);
  const sqs = new SQSClient(config);
  const dynamo = new DynamoDBClient(config);
  return {
    ec2,
    sqs,
    ddb: DynamoDBDocumentClient.from(dynamo),
    destroy: () => {
      ec2.destroy();
      sqs.destroy();
      dynamo.destroy();
    },
  };
}

/** The fake GitHub and the fake runner package it serves as actions/runner's release. */
export interface FakeRunnerRelease extends AsyncDisposable {
  github: FakeGithub;
  runnerPackage: FakeRunnerPackage;
  /** GitHub's side of the instances (test/support/runner_package.ts's `githubDir`). */
  githubDir: string;
  /** Makes the runner package accept the newest registration token GitHub handed out. */
  acceptIssuedToken(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the fake runner package in `dir` and a fake GitHub taking `pat` that serves
 * `actions/runner` {@link PLACEHOLDER_RUNNER_VERSION} with the package's checksum for both
 * architectures (published at `publishedAt`, when given). The package accepts no registration
 * token until {@link FakeRunnerRelease.acceptIssuedToken}: the token is known only once refresh
 * asked GitHub for it.
 */
export async function startFakeRunnerRelease(
  dir: string,
  options: { pat?: string; publishedAt?: string } = {},
): Promise<FakeRunnerRelease> {
  const githubDir = join(dir, "github");
  const tokenSha256File = join(dir, "token.sha256");
  const runnerPackage = await startFakeRunnerPackage({
    workDir: dir,
    githubDir,
    token: { sha256File: tokenSha256File },
  });
  const version = PLACEHOLDER_RUNNER_VERSION;
  const github = startFakeGithub({
    tokens: [options.pat ?? TEST_PAT],
    releases: [{
      repository: "actions/runner",
      tag_name: `v${version}`,
      ...(options.publishedAt ? { published_at: options.publishedAt } : {}),
      assets: (["x64", "arm64"] as const).map((arch) => ({
        name: packageName(arch, version),
        digest: `sha256:${runnerPackage.sha256}`,
      })),
    }],
  });
  const close = async () => {
    await github.close();
    await runnerPackage.close();
  };
  return {
    github,
    runnerPackage,
    githubDir,
    acceptIssuedToken: async () => {
      const token = github.issued.at(-1);
      if (token !== undefined) await Deno.writeTextFile(tokenSha256File, sha256(token));
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * refresh's flags for a pool on `network` whose instances boot for real on the harness: the base
 * ones, the fake GitHub, a root volume size and instance type moto launches, and the fake runner
 * package to download; callers add their own after them.
 */
export function harnessArgs(network: Network, release: FakeRunnerRelease): string[] {
  return [
    ...baseArgs(network),
    "--github-api-url",
    release.github.url,
    // moto, unlike EC2, wants a size on a root volume mapping that overrides only its type.
    "--root-volume-size",
    "30",
    // A type provision's default allowed-instance-types (c*, m*, r*) claims (see TEMPLATE_ARGS).
    "--instance-type",
    "m5.large",
    "--runner-download-url",
    release.runnerPackage.downloadUrl,
  ];
}

/**
 * Runs refresh's entry in this process with `args` and `--json`, moto's environment and
 * {@link TEST_PAT} as GITHUB_TOKEN; its exit code, report and stderr. Throws on exit code 2 (a
 * bad desired state prints no report), with what refresh printed.
 */
export async function refreshJson(
  args: string[],
  env: Record<string, string> = {},
  monotonic?: () => number,
): Promise<{ code: number; report: RunReport; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main([...args, "--json"], { ...AWS_ENV, GITHUB_TOKEN: TEST_PAT, ...env }, {
    stdout: (text) => out.push(text),
    stderr: (text) => err.push(text),
    readTextFile: (path, maxBytes) => readBounded(Deno.openSync(path), maxBytes),
    ...(monotonic ? { monotonic } : {}),
  });
  if (code === 2) throw new Error(`invalid desired state:\n${err.join("\n")}`);
  return { code, report: JSON.parse(out.join("\n")) as RunReport, stderr: err.join("\n") };
}

/**
 * Launches `count` instances as fleet-actions' provision does: CreateFleet, instant, the pool's
 * template at `$Default` with an instance type and subnet override, and its own instance tags.
 */
export async function launchAsProvision(
  ec2: EC2Client,
  options: { runId: string; subnetId: string; count?: number },
): Promise<CreateFleetCommandOutput> {
  return await ec2.send(
    new CreateFleetCommand({
      Type: "instant",
      LaunchTemplateConfigs: [{
        LaunchTemplateSpecification: { LaunchTemplateName: TEMPLATE, Version: "$Default" },
        Overrides: [{ InstanceType: "m5.large", SubnetId: options.subnetId }],
      }],
      TargetCapacitySpecification: {
        TotalTargetCapacity: options.count ?? 1,
        DefaultTargetCapacityType: "on-demand",
      },
      TagSpecifications: [{
        ResourceType: "instance",
        Tags: [
          { Key: "AllowSelfTermination", Value: "true" },
          { Key: "InitialRunId", Value: options.runId },
        ],
      }],
    }),
  );
}

/** The ids of the instances a CreateFleet launched. */
export function fleetInstanceIds(fleet: CreateFleetCommandOutput): string[] {
  return (fleet.Instances ?? []).flatMap((i) => i.InstanceIds ?? []);
}

/** Instance `id`'s EC2 tags, as its instance metadata shows them. */
export async function instanceTags(ec2: EC2Client, id: string): Promise<Record<string, string>> {
  const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
  return Object.fromEntries(
    (out.Reservations?.[0]?.Instances?.[0]?.Tags ?? []).map((t) => [t.Key!, t.Value!]),
  );
}

/**
 * The pool template's default version and its user data as cloud-init runs it (gzip-compressed
 * user data uncompressed).
 */
export async function defaultUserData(
  ec2: EC2Client,
): Promise<{ version: LaunchTemplateVersion; script: string }> {
  const out = await ec2.send(
    new DescribeLaunchTemplateVersionsCommand({
      LaunchTemplateName: TEMPLATE,
      Versions: ["$Default"],
    }),
  );
  const version = out.LaunchTemplateVersions![0];
  return { version, script: userDataContent(version.LaunchTemplateData!.UserData!) };
}
