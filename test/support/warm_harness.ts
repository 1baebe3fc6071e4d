/**
 * A pool built by refresh (its entry, every task, the generated bootstrap) with a warm pool,
 * on the harness: moto, the fake GitHub (registration token, runner release), the fake runner
 * package and, per instance, a fake instance-metadata server answering the instance's id and EC2
 * tags while the template's default user data runs for real under bash. Used by
 * test/refresh_warm_pool_test.ts and bench/warm_pool_bench.ts.
 */
import { join } from "node:path";
import { DescribeInstancesCommand, type EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import {
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from "npm:@aws-sdk/client-sqs@3.1169.0";
import { type DynamoDBDocumentClient, GetCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import type { RunReport } from "../../lib/report.ts";
import { runUserData, type UserDataRun } from "./bootstrap_instance.ts";
import { classifyPoolMessage, ControlPlane } from "./control_plane.ts";
import { type FakeImds, startFakeImds } from "./imds.ts";
import { MOTO_URL, resetMoto } from "./moto.ts";
import {
  defaultUserData,
  fleetInstanceIds,
  harnessArgs,
  instanceTags,
  launchAsProvision,
  motoClients,
  refreshJson,
  REGION,
  startFakeRunnerRelease,
  TABLE,
} from "./pool.ts";

export { TABLE, TEMPLATE } from "./pool.ts";

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
  /**
   * Picks up a class's next instance as fleet-actions' provision does (PoolPickUpManager, read
   * from its source): receives and deletes a message; discards it when its class is unknown, its
   * cpu differs from the class's or its mmem is lower, its threshold has passed or it has no
   * usage class; puts it back (and takes the next) when its instance type matches none of the
   * allowed patterns or its usage class is not the one asked for; gives up on an instance seen 5
   * times. `options` are provision's inputs, its defaults by default (usage-class on-demand,
   * allowed-instance-types c*, m*, r*). Every verdict is kept in `pickups`.
   */
  pickUp(
    cls: string,
    options?: { usageClass?: string; allowedInstanceTypes?: string[] },
  ): Promise<Record<string, unknown> | undefined>;
  /**
   * fleet-actions' provision's claim worker: picks up (see {@link pickUp}) and claims, moving on
   * to the next message when the claim's condition fails or the heartbeat is stale; the id
   * claimed (UD_REG_OK within its window) and every attempt, or undefined once the queue is
   * empty (provision then launches).
   */
  provisionClaim(
    cls: string,
    runId: string,
    options?: { usageClass?: string; allowedInstanceTypes?: string[]; timeoutMs?: number },
  ): Promise<{ claimed?: string; attempts: { id: string; ok: boolean; ms: number }[] }>;
  /** The fake instance-metadata server of a booted instance. */
  imds(id: string): FakeImds;
  /** What each pick-up did with each message: ok, delete or requeue, and why. */
  pickups: { id: string; status: "ok" | "delete" | "requeue"; reason: string }[];
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
  const { ec2, sqs, ddb, destroy } = motoClients();
  const release = await startFakeRunnerRelease(dir);
  const poolArgs = [...harnessArgs(network, release), ...args];
  const plane = new ControlPlane({ ddb, table: TABLE });
  const runs: UserDataRun[] = [];
  const imdses: FakeImds[] = [];

  const refresh = async (extra: string[] = []) => {
    const ran = await refreshJson([...poolArgs, ...extra]);
    // The runner package accepts only the token GitHub handed out, once refresh asked for it.
    await release.acceptIssuedToken();
    return ran;
  };

  const boot = async (id: string) => {
    const { script } = await defaultUserData(ec2);
    const imds = startFakeImds({
      instanceId: id,
      region: REGION,
      tags: await instanceTags(ec2, id),
    });
    imdses.push(imds);
    byInstance.set(id, imds);
    const instanceDir = join(dir, id);
    await Deno.mkdir(instanceDir, { recursive: true });
    const run = await runUserData({
      dir: instanceDir,
      script,
      imdsUrl: imds.url,
      awsEndpoint: MOTO_URL,
      instanceId: id,
    });
    runs.push(run);
    return run;
  };

  const provisionFleet = async (runId: string, count = 1) =>
    fleetInstanceIds(
      await launchAsProvision(ec2, { runId, subnetId: network.subnetIds[0], count }),
    );

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

  const pickups: WarmHarness["pickups"] = [];
  const pickUp = async (
    cls: string,
    options: { usageClass?: string; allowedInstanceTypes?: string[] } = {},
  ) => {
    const { Item } = await ddb.send(
      new GetCommand({
        TableName: TABLE,
        Key: { PK: "TYPE#METADATA", SK: "ID#resource_class_config" },
      }),
    );
    const config = Item!.value as Record<string, { cpu: number; mmem: number; queueUrl: string }>;
    const url = config[cls].queueUrl;
    const seen = new Map<string, number>();
    while (true) {
      const out = await sqs.send(
        new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 1 }),
      );
      const message = out.Messages?.[0];
      if (!message) return undefined;
      await sqs.send(
        new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: message.ReceiptHandle! }),
      );
      const body = JSON.parse(message.Body!);
      const count = (seen.get(body.id) ?? 0) + 1;
      seen.set(body.id, count);
      if (count > 5) {
        await sqs.send(new SendMessageCommand({ QueueUrl: url, MessageBody: message.Body! }));
        return undefined;
      }
      const verdict = classifyPoolMessage(body, config, {
        usageClass: options.usageClass ?? "on-demand",
        allowedInstanceTypes: options.allowedInstanceTypes ?? ["c*", "m*", "r*"],
      });
      pickups.push({ id: String(body.id), ...verdict });
      if (verdict.status === "ok") return body;
      if (verdict.status === "requeue") {
        await sqs.send(new SendMessageCommand({ QueueUrl: url, MessageBody: message.Body! }));
      }
    }
  };

  const provisionClaim: WarmHarness["provisionClaim"] = async (cls, runId, options = {}) => {
    const attempts: { id: string; ok: boolean; ms: number }[] = [];
    while (true) {
      const message = await pickUp(cls, options);
      if (!message) return { attempts };
      const id = String(message.id);
      const outcome = await plane.claim(id, runId, { timeoutMs: options.timeoutMs ?? 10_000 });
      attempts.push({ id, ok: outcome.ok, ms: outcome.elapsedMs });
      if (outcome.ok) return { claimed: id, attempts };
    }
  };

  const byInstance = new Map<string, FakeImds>();

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
    githubDir: release.githubDir,
    subnetIds: network.subnetIds,
    refresh,
    boot,
    provisionFleet,
    instancesTagged,
    pickUp,
    pickups,
    provisionClaim,
    imds: (id: string) => byInstance.get(id)!,
    waitReady,
    [Symbol.asyncDispose]: async () => {
      for (const run of runs) await run.kill();
      for (const imds of imdses) await imds.close();
      await release.close();
      destroy();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
