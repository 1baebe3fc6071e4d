/**
 * Benchmark of the reaper at scale, against its own moto server:
 *
 *     sh test/support/tools.sh deno run --allow-net=127.0.0.1 --allow-env --allow-read \
 *       --allow-run --allow-sys=osRelease,homedir bench/reaper_bench.ts [--instances 6000] \
 *       [--expired 2000] [--latency]
 *
 * It seeds N instance records (`--expired` of them expired, one third by default; the rest half
 * idle, half running), each with a real moto instance launched from the pool's launch template
 * (version 1, so EC2's `aws:ec2launchtemplate:*` tags and the ownership tag are on it), a
 * heartbeat and a worker signal, then runs refresh's entry (`main`, `--only reaper`) and prints wall time, calls by
 * operation and items read, checking the targets:
 *
 * - first run: every expired instance reaped in one run, TerminateInstances calls =
 *   ceil(expired / 1000), total calls within 10% of the minimum (heartbeats and worker signals
 *   deleted before their records);
 * - second run: reads no terminated record and writes nothing;
 * - third run, after the template's default moved to version 2 (rollout): drains exactly
 *   `--rollout-max-per-run` (25%, rounded up) of the idle instances, touches no running one, and
 *   stays within 10% of its minimum calls.
 *
 * Each run's wall time is split into its reads (until the reaper says what it read) and the rest
 * (locks, terminations, deletions). With `--latency`, every call of the measured runs first waits
 * as over the internet (DynamoDB 40 ms, EC2 150 ms), so the overlap of calls shows; without it,
 * moto's CPU time dominates.
 *
 * Heartbeats are rewritten before each run, as live instances keep them fresh. Exits 1 when a
 * target is missed.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  CreateLaunchTemplateCommand,
  CreateLaunchTemplateVersionCommand,
  ModifyLaunchTemplateCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { CallCounter } from "../lib/calls.ts";
import { type DesiredState, parseDesiredState } from "../lib/config.ts";
import { item, OWNER_TAG } from "../lib/contract.ts";
import type { ReaperCounts } from "../lib/reaper.ts";
import type { RunReport } from "../lib/report.ts";
import { runBudget, runTasks, type TaskContext } from "../lib/task.ts";
import { buildClients, IMPLEMENTATIONS, main } from "../refresh.ts";
import { AWS_ENV } from "../test/support/moto.ts";
import {
  countInstanceRecords,
  instanceRecords,
  launchInstances,
  putItems,
} from "./support/seed.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    instances: { type: "string" },
    expired: { type: "string" },
    latency: { type: "boolean" },
  },
});
const total = Number(values.instances ?? 6000);
if (!Number.isSafeInteger(total) || total < 3) {
  throw new RangeError(`--instances: expected a whole number >= 3, got ${values.instances}`);
}
const expired = Number(values.expired ?? Math.floor(total / 3));
if (!Number.isSafeInteger(expired) || expired < 1 || expired >= total) {
  throw new RangeError(
    `--expired: expected a whole number from 1 to ${total - 1}, got ${values.expired}`,
  );
}
// The SDK's default credential chain reads the process environment.
for (const [k, v] of Object.entries(AWS_ENV)) Deno.env.set(k, v);

const TABLE = "bench-pool-ci-table";
const TEMPLATE = "bench-pool-ci-launch-template";
const ARGS = ["--region", "us-east-1", "--table", TABLE, "--launch-template-name", TEMPLATE];
const parsed = parseDesiredState({
  args: [...ARGS, "--only", "reaper"],
  env: {},
  readTextFile: Deno.readTextFileSync,
});
if (parsed === "help") throw new Error("unexpected help");
const desired: DesiredState = parsed;
// Seeding thousands of instances takes moto longer than a run's per-request timeout.
const { ec2, ddb } = buildClients(desired, AWS_ENV, new CallCounter(), { timeoutMs: 600_000 });

async function refresh(only: string): Promise<RunReport> {
  let out = "";
  const code = await main([...ARGS, "--only", only, "--json"], AWS_ENV, {
    stdout: (text) => out += text,
    stderr: (text) => console.error(text),
    readTextFile: Deno.readTextFileSync,
  });
  const report = JSON.parse(out) as RunReport;
  if (code !== 0) throw new Error(`refresh --only ${only} exited ${code}: ${out}`);
  return report;
}

/**
 * One reaper run, as the entry runs it but with a per-request timeout of 10 minutes: moto's
 * tag-filtered DescribeInstances over thousands of instances can take longer than the entry's
 * 20 s on a busy machine, which EC2 never does. Calls are counted the entry's way.
 */
async function reap(): Promise<RunReport & { readMs: number }> {
  const counter = new CallCounter();
  const started = performance.now();
  // The reads end when the reaper says what it read: the rest is locks, terminations, deletions.
  let readMs = 0;
  const info = (m: string) => {
    if (/instance records, \d+ pool instances alive/.test(m)) readMs = performance.now() - started;
    console.error(m);
  };
  const clients = buildClients(desired, AWS_ENV, counter, { timeoutMs: 600_000 });
  if (values.latency) addLatency(clients);
  const ctx: TaskContext<DesiredState> = {
    desired,
    clients,
    now: () => new Date(),
    log: { info, warn: (m) => console.error(`warning: ${m}`) },
    dryRun: false,
    secret: () => {},
    budget: runBudget(30 * 60_000),
  };
  const results = await runTasks([["reaper", IMPLEMENTATIONS.reaper]], ctx);
  if (results[0].status === "failed") throw new Error(`reaper failed: ${results[0].error}`);
  return {
    version: 1,
    dryRun: false,
    region: desired.region,
    table: desired.table,
    results,
    calls: counter.toJSON(),
    writeCalls: counter.writes(),
    exitCode: 0,
    readMs,
  };
}

/**
 * `--latency`: each attempt of a call waits before it is sent, as over the internet (DynamoDB
 * 40 ms, EC2 150 ms, the figures issue #17 measured); calls in flight wait side by side.
 */
function addLatency(clients: { ec2: typeof ec2; ddb: typeof ddb }) {
  const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  for (const [client, ms] of [[clients.ec2, 150], [clients.ddb, 40]] as const) {
    (client.middlewareStack as typeof ddb.middlewareStack).add(
      (next) => async (args) => {
        await wait(ms);
        return next(args);
      },
      { step: "finalizeRequest", name: "benchLatency" },
    );
  }
}

/** Launch template data of a version: its AMI, and the ownership tag on instances. */
const templateData = (ami: string) => ({
  ImageId: ami,
  InstanceType: "t3.micro" as const,
  TagSpecifications: [{
    ResourceType: "instance" as const,
    Tags: [{ Key: OWNER_TAG, Value: TABLE }],
  }],
});

// Seed.
const seedStart = performance.now();
await refresh("table");
const template = await ec2.send(
  new CreateLaunchTemplateCommand({
    LaunchTemplateName: TEMPLATE,
    LaunchTemplateData: templateData("ami-1e749f67"),
    TagSpecifications: [{
      ResourceType: "launch-template",
      Tags: [{ Key: OWNER_TAG, Value: TABLE }],
    }],
  }),
);
const templateId = template.LaunchTemplate!.LaunchTemplateId!;
const ids = await launchInstances(ec2, total, {
  LaunchTemplate: { LaunchTemplateId: templateId, Version: "1" },
});
const items = instanceRecords(ids, expired, new Date());
await putItems(ddb, TABLE, items);
console.error(
  `seeded ${total} instances (${expired} expired), ${items.length} items in ${
    ((performance.now() - seedStart) / 1000).toFixed(1)
  } s`,
);

/** Rewrites the heartbeats of these instances with the current time, as live instances do. */
async function beat(alive: string[]) {
  const at = new Date();
  await putItems(ddb, TABLE, alive.map((id) => item("HEARTBEAT", id, at, { value: "PING" })));
}

// Measure.
const liveIds = ids.slice(expired);
async function run(label: string) {
  await beat(liveIds);
  const started = performance.now();
  const report = await reap();
  const seconds = (performance.now() - started) / 1000;
  const result = report.results[0];
  const found = result.found as unknown as ReaperCounts;
  const calls = Object.values(report.calls).reduce((a, b) => a + b, 0);
  const rest = seconds - report.readMs / 1000;
  console.log(
    `\n${label}: ${seconds.toFixed(1)} s wall (reads ${(report.readMs / 1000).toFixed(1)} s, then ${
      rest.toFixed(1)
    } s), ${calls} calls, ${report.writeCalls} writes`,
  );
  console.log(`  ${result.status}: ${result.summary}`);
  for (const [op, n] of Object.entries(report.calls)) console.log(`  ${op.padEnd(30)} ${n}`);
  console.log(`  items read (ScannedCount)      ${found.itemsRead} in ${found.pages} pages`);
  return { report, found, calls };
}

const first = await run("first run");
const second = await run("second run");
const left = await countInstanceRecords(ddb, TABLE);

// Rollout: a new AMI becomes the default version.
await ec2.send(
  new CreateLaunchTemplateVersionCommand({
    LaunchTemplateId: templateId,
    LaunchTemplateData: templateData("ami-785db401"),
  }),
);
await ec2.send(
  new ModifyLaunchTemplateCommand({ LaunchTemplateId: templateId, DefaultVersion: "2" }),
);
const third = await run("third run (default moved to version 2)");
const runningLeft = await countInstanceRecords(ddb, TABLE, {
  FilterExpression: "#s = :running",
  ExpressionAttributeNames: { "#s": "state" },
  ExpressionAttributeValues: { ":running": "running" },
});
const live = total - expired;
const liveIdle = liveIds.filter((_, i) => (expired + i) % 2 === 0).length;
const liveRunning = live - liveIdle;
const drains = Math.ceil(liveIdle / 4);
const op = (report: RunReport, name: string) => report.calls[name] ?? 0;
// Writes: a lock per expired record, a TerminateInstances per 1,000, then per 25 items a delete
// request of heartbeats and worker signals, and later one of records. Reads: the Query pages of
// records, heartbeats and worker signals (as made: their number is DynamoDB's 1 MB pages), a
// DescribeInstances page per 1,000 pool instances, the template look-up.
const queries = op(first.report, "DynamoDB.Query");
const minimum = expired + Math.ceil(expired / 1000) + Math.ceil((2 * expired) / 25) +
  Math.ceil(expired / 25) + queries + Math.ceil(total / 1000) + 2;
// The rollout run: the same, for the drained instances, with the reads of the live pool.
const thirdQueries = op(third.report, "DynamoDB.Query");
const thirdMinimum = drains + Math.ceil(drains / 1000) + Math.ceil((2 * drains) / 25) +
  Math.ceil(drains / 25) + thirdQueries + Math.ceil(live / 1000) + 2;
const checks: [string, boolean][] = [
  [
    `every expired instance reaped in one run (${first.found.terminated} of ${expired} terminated, ${left} records left, ${live} live)`,
    first.found.locked === expired && first.found.terminated === expired &&
    first.found.expunged === expired && left === live,
  ],
  [
    `TerminateInstances calls = ceil(${expired} / 1000) = ${Math.ceil(expired / 1000)}: ${
      op(first.report, "EC2.TerminateInstances")
    }`,
    op(first.report, "EC2.TerminateInstances") === Math.ceil(expired / 1000),
  ],
  [
    `second run reads no terminated record (${second.found.itemsRead} items read, ${live} live) and writes nothing (${second.report.writeCalls})`,
    second.found.itemsRead === live && second.report.writeCalls === 0,
  ],
  [
    `total calls ${first.calls} within 10% of the minimum ${minimum} (${expired} UpdateItem + ${
      Math.ceil(expired / 1000)
    } TerminateInstances + ${
      Math.ceil((2 * expired) / 25) + Math.ceil(expired / 25)
    } BatchWriteItem + ${queries} Query pages + ${
      Math.ceil(total / 1000)
    } DescribeInstances pages + DescribeLaunchTemplates + DescribeLaunchTemplateVersions)`,
    first.calls <= minimum * 1.1,
  ],
  [
    `third run drains 25% of ${liveIdle} idle instances, ${drains}: ${third.found.drained} drained, ${third.found.outdatedLeft} left for later runs, ${runningLeft} of ${liveRunning} running records untouched`,
    third.found.outdated === drains && third.found.drained === drains &&
    third.found.outdatedLeft === liveIdle - drains && third.found.unhealthy === 0 &&
    runningLeft === liveRunning,
  ],
  [
    `third run's calls ${third.calls} within 10% of its minimum ${thirdMinimum} (${drains} UpdateItem + ${
      Math.ceil(drains / 1000)
    } TerminateInstances + ${
      Math.ceil((2 * drains) / 25) + Math.ceil(drains / 25)
    } BatchWriteItem + ${thirdQueries} Query pages + ${
      Math.ceil(live / 1000)
    } DescribeInstances pages + 2 template look-ups)`,
    third.calls <= thirdMinimum * 1.1,
  ],
];
console.log("\ntargets:");
for (const [text, ok] of checks) console.log(`  ${ok ? "ok  " : "MISS"} ${text}`);
Deno.exit(checks.every(([, ok]) => ok) ? 0 : 1);
