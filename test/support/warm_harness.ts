/**
 * A pool built by refresh (its entry, every task, the generated bootstrap) with a warm pool,
 * on the harness: moto, the fake GitHub (registration token, runner release), the fake runner
 * package and, per instance, a fake instance-metadata server answering the instance's id and EC2
 * tags while the template's default user data runs for real under bash. Used by
 * test/refresh_warm_pool_test.ts and bench/warm_pool_bench.ts.
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import {
  CreateFleetCommand,
  DescribeInstancesCommand,
  DescribeLaunchTemplateVersionsCommand,
  EC2Client,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import {
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SQSClient,
} from "npm:@aws-sdk/client-sqs@3.1169.0";
import { DynamoDBDocumentClient, GetCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { readBounded } from "../../lib/inputs.ts";
import type { RunReport } from "../../lib/report.ts";
import { DEFAULT_RUNNER_VERSION } from "../../lib/user_data.ts";
import { main } from "../../refresh.ts";
import { baseArgs, TEST_PAT } from "./aws.ts";
import { runUserData, type UserDataRun } from "./bootstrap_instance.ts";
import { ControlPlane } from "./control_plane.ts";
import { startFakeGithub } from "./github.ts";
import { type FakeImds, startFakeImds } from "./imds.ts";
import { AWS_ENV, MOTO_URL, resetMoto } from "./moto.ts";
import { startFakeRunnerPackage } from "./runner_package.ts";

export const TABLE = "acme-widgets-ci-table";
export const TEMPLATE = "acme-widgets-ci-launch-template";
const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "testing", secretAccessKey: "testing" };

export interface WarmHarness extends AsyncDisposable {
  dir: string;
  ec2: EC2Client;
  sqs: SQSClient;
  ddb: DynamoDBDocumentClient;
  plane: ControlPlane;
  githubDir: string;
  subnetIds: readonly string[];
  /** Runs refresh's entry with the pool's flags plus `extra`; its exit code and report. */
  refresh(extra?: string[]): Promise<{ code: number; report: RunReport; stderr: string }>;
  /** Runs the template's default user data as instance `id` would (IMDS answering its tags). */
  boot(id: string): Promise<UserDataRun>;
  /** Launches `count` instances as provision does (CreateFleet, $Default), for run `runId`. */
  provisionFleet(runId: string, count?: number): Promise<string[]>;
  /** Instance ids alive in moto carrying `InitialRunId` matching `pattern`. */
  instancesTagged(pattern: RegExp): Promise<string[]>;
  /** Receives (and deletes) the next pool message of a class, as provision picks up. */
  pickUp(cls: string): Promise<Record<string, unknown> | undefined>;
  /** Waits until instance `id` is ready (UD_OK and a heartbeat); ms waited. */
  waitReady(id: string, timeoutMs?: number): Promise<number>;
}

/**
 * Starts the harness; `args` are refresh's pool flags (after the base ones), e.g.
 * `["--warm-pool", "large=1"]`. Refresh itself is not run yet.
 */
export async function startWarmHarness(args: string[]): Promise<WarmHarness> {
  const network = await resetMoto();
  const dir = await Deno.makeTempDir({ prefix: "refresh-warm-" });
  // Each instance's directory lies under it: the runner user must pass through.
  await Deno.chmod(dir, 0o755);
  const ec2 = new EC2Client({ endpoint: MOTO_URL, region: REGION, credentials: CREDENTIALS });
  const sqs = new SQSClient({ endpoint: MOTO_URL, region: REGION, credentials: CREDENTIALS });
  const ddbClient = new DynamoDBClient({
    endpoint: MOTO_URL,
    region: REGION,
    credentials: CREDENTIALS,
  });
  const ddb = DynamoDBDocumentClient.from(ddbClient);
  const githubDir = join(dir, "github");
  const tokenSha256File = join(dir, "token.sha256");
  const runnerPackage = await startFakeRunnerPackage({
    workDir: dir,
    githubDir,
    token: { sha256File: tokenSha256File },
  });
  const gh = startFakeGithub({
    tokens: [TEST_PAT],
    releases: [{
      repository: "actions/runner",
      tag_name: `v${DEFAULT_RUNNER_VERSION}`,
      assets: ["x64", "arm64"].map((arch) => ({
        name: `actions-runner-linux-${arch}-${DEFAULT_RUNNER_VERSION}.tar.gz`,
        digest: `sha256:${runnerPackage.sha256}`,
      })),
    }],
  });
  const poolArgs = [
    ...baseArgs(network),
    "--github-api-url",
    gh.url,
    // moto, unlike EC2, wants a size on a root volume mapping that overrides only its type.
    "--root-volume-size",
    "30",
    "--instance-type",
    "t3.micro",
    "--runner-download-url",
    runnerPackage.downloadUrl,
    ...args,
  ];
  const plane = new ControlPlane({ ddb, table: TABLE });
  const runs: UserDataRun[] = [];
  const imdses: FakeImds[] = [];

  const refresh = async (extra: string[] = []) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main([...poolArgs, ...extra, "--json"], {
      ...AWS_ENV,
      GITHUB_TOKEN: TEST_PAT,
    }, {
      stdout: (text) => out.push(text),
      stderr: (text) => err.push(text),
      readTextFile: (path, maxBytes) => readBounded(Deno.openSync(path), maxBytes),
    });
    // The runner package accepts only the token GitHub handed out, once refresh asked for it.
    if (gh.issued.length) {
      await Deno.writeTextFile(
        tokenSha256File,
        createHash("sha256").update(gh.issued.at(-1)!).digest("hex"),
      );
    }
    return { code, report: JSON.parse(out.join("\n")) as RunReport, stderr: err.join("\n") };
  };

  const tagsOf = async (id: string) => {
    const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
    return Object.fromEntries(
      out.Reservations![0].Instances![0].Tags!.map((t) => [t.Key!, t.Value!]),
    );
  };

  const boot = async (id: string) => {
    const versions = await ec2.send(
      new DescribeLaunchTemplateVersionsCommand({
        LaunchTemplateName: TEMPLATE,
        Versions: ["$Default"],
      }),
    );
    const raw = Buffer.from(
      versions.LaunchTemplateVersions![0].LaunchTemplateData!.UserData!,
      "base64",
    );
    // cloud-init runs gzip-compressed user data uncompressed (lib/user_data.ts).
    const gzipped = raw[0] === 0x1f && raw[1] === 0x8b;
    const script = new TextDecoder().decode(gzipped ? gunzipSync(raw) : raw);
    const imds = startFakeImds({ instanceId: id, region: REGION, tags: await tagsOf(id) });
    imdses.push(imds);
    const instanceDir = join(dir, id);
    await Deno.mkdir(instanceDir, { recursive: true });
    const run = await runUserData({
      dir: instanceDir,
      script,
      imdsUrl: imds.url,
      awsEndpoint: MOTO_URL,
    });
    runs.push(run);
    return run;
  };

  const provisionFleet = async (runId: string, count = 1) => {
    const fleet = await ec2.send(
      new CreateFleetCommand({
        Type: "instant",
        LaunchTemplateConfigs: [{
          LaunchTemplateSpecification: { LaunchTemplateName: TEMPLATE, Version: "$Default" },
          Overrides: [{ InstanceType: "t3.micro", SubnetId: network.subnetIds[0] }],
        }],
        TargetCapacitySpecification: {
          TotalTargetCapacity: count,
          DefaultTargetCapacityType: "on-demand",
        },
        TagSpecifications: [{
          ResourceType: "instance",
          Tags: [
            { Key: "AllowSelfTermination", Value: "true" },
            { Key: "InitialRunId", Value: runId },
          ],
        }],
      }),
    );
    return fleet.Instances!.flatMap((i) => i.InstanceIds!);
  };

  const instancesTagged = async (pattern: RegExp) => {
    const out = await ec2.send(
      new DescribeInstancesCommand({
        Filters: [{ Name: "instance-state-name", Values: ["pending", "running"] }],
      }),
    );
    return out.Reservations!.flatMap((r) => r.Instances!).filter((i) =>
      pattern.test(i.Tags?.find((t) => t.Key === "InitialRunId")?.Value ?? "")
    ).map((i) => i.InstanceId!).sort();
  };

  const pickUp = async (cls: string) => {
    const { Item } = await ddb.send(
      new GetCommand({
        TableName: TABLE,
        Key: { PK: "TYPE#METADATA", SK: "ID#resource_class_config" },
      }),
    );
    const url = Item!.value[cls].queueUrl as string;
    const out = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 1 }),
    );
    const message = out.Messages?.[0];
    if (!message) return undefined;
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: message.ReceiptHandle! }),
    );
    return JSON.parse(message.Body!);
  };

  const waitReady = async (id: string, timeoutMs = 90_000) => {
    const started = Date.now();
    while (Date.now() - started < timeoutMs) {
      const signal = await plane.signal(id);
      const age = await plane.heartbeatAgeMs(id);
      if (signal?.state === "UD_OK" && age !== undefined && age <= 5_000) {
        return Date.now() - started;
      }
      if (signal?.state.endsWith("_FAILED")) throw new Error(`${id}: ${signal.state}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`${id} not ready after ${timeoutMs} ms`);
  };

  return {
    dir,
    ec2,
    sqs,
    ddb,
    plane,
    githubDir,
    subnetIds: network.subnetIds,
    refresh,
    boot,
    provisionFleet,
    instancesTagged,
    pickUp,
    waitReady,
    [Symbol.asyncDispose]: async () => {
      for (const run of runs) await run.kill();
      for (const imds of imdses) await imds.close();
      await gh[Symbol.asyncDispose]();
      await runnerPackage.close();
      ec2.destroy();
      sqs.destroy();
      ddbClient.destroy();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
