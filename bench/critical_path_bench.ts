/**
 * Benchmark of a whole refresh run on a seeded pool, with and without internet latency, and (when
 * given its bundle) of fleet-actions' refresh on the same pool, measured the same way:
 *
 *     sh test/support/tools.sh deno run --allow-net=127.0.0.1 --allow-env --allow-read \
 *       --allow-write --allow-run --allow-sys=osRelease,homedir bench/critical_path_bench.ts \
 *       [--instances 1000] [--expired 500] [--rounds 1] [--latency both|on|off]
 *       [--fleet-actions <path/to/dist/index.js>]
 *
 * The pool, the same before every measured run: moto (test/support/moto.ts) reset with the test
 * network, the fake GitHub (test/support/github.ts), and everything a steady state has (refresh is
 * run once first, so the table, launch template, queues, parameters and registration token exist);
 * then `--instances` instance records, each a real moto instance launched from the pool's launch
 * template, with a heartbeat and a worker signal (seeded by bench/support/seed.ts, as
 * bench/reaper_bench.ts seeds them), `--expired` of them expired (idle past their threshold), and
 * refresh's memory of a sweep of that pool a minute ago (lib/reaper/sweep.ts): the measured run is
 * a steady-state one, which describes by id only what it acts on.
 * refresh gets a 300 s request timeout: moto's DescribeInstances over thousands of instances can
 * take longer than the default 20 s.
 *
 * Every program under test talks to AWS through a fault proxy (test/support/fault_proxy.ts) in
 * front of moto: without latency, and with DynamoDB and SQS 40 ms and EC2 150 ms added to each
 * request (requests on different connections wait side by side, as over the internet). The
 * proxy's timeline gives, per run: wall time (process start to exit), AWS calls per operation,
 * the upstream milliseconds per operation (where the time goes) and when its first call started
 * and its last one ended, and the calls in flight over time (the mean per second, as a histogram).
 *
 * refresh runs as a user runs it: `deno run refresh.ts` in its own process, all tasks.
 * fleet-actions' refresh runs as its action does: `node <bundle>` with its inputs as `INPUT_*`
 * variables (action.yml of fleet-actions/ec2-runner-pool-manager: mode, aws-region, table-name,
 * ami, github-token, iam-instance-profile, security-group-ids, subnet-ids, ...), the AWS endpoint
 * in AWS_ENDPOINT_URL and GitHub's in GITHUB_API_URL. Without `--fleet-actions` only refresh is
 * measured (the bundle is not part of this repository).
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  DescribeLaunchTemplatesCommand,
  DescribeSubnetsCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { timestamp } from "../lib/contract.ts";
import { writeSweep } from "../lib/reaper/sweep.ts";
import { CallCounter } from "../lib/calls.ts";
import { type DesiredState, parseDesiredState } from "../lib/config.ts";
import { buildClients } from "../refresh.ts";
import { baseArgs, PINNED_RUNNER_ARGS, TEST_PAT } from "../test/support/aws.ts";
import { startFaultProxy, type Timing } from "../test/support/fault_proxy.ts";
import { startFakeGithub } from "../test/support/github.ts";
import { AWS_ENV, MOTO_URL, resetMoto } from "../test/support/moto.ts";
import { PERMISSIONS, REFRESH } from "../test/support/process.ts";
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
    rounds: { type: "string" },
    "fleet-actions": { type: "string" },
    latency: { type: "string" },
  },
});
const total = Number(values.instances ?? 1000);
const expired = Number(values.expired ?? Math.floor(total / 2));
const rounds = Number(values.rounds ?? 1);
if (![total, expired, rounds].every(Number.isSafeInteger) || expired > total || rounds < 1) {
  throw new RangeError(
    `expected whole numbers --instances >= --expired and --rounds >= 1, got ${
      JSON.stringify(values)
    }`,
  );
}
const latencies = { both: ["no latency", "latency"], on: ["latency"], off: ["no latency"] }[
  values.latency ?? "both"
];
if (!latencies) throw new RangeError(`expected --latency both, on or off, got ${values.latency}`);
const fleetActions = values["fleet-actions"];
if (fleetActions) Deno.statSync(fleetActions); // fails early, naming the path
for (const [k, v] of Object.entries(AWS_ENV)) Deno.env.set(k, v);

/** Internet latency per service, as the issue measured it. */
const LATENCY: Record<string, number> = { DynamoDB: 40, SQS: 40, EC2: 150 };

let network = await resetMoto();
await using github = startFakeGithub({ tokens: [TEST_PAT] });
const REPO = "acme/widgets";
const TABLE = "acme-widgets-ci-table";
const TEMPLATE = "acme-widgets-ci-launch-template";
/** refresh's flags on the current network. */
const args = () => [
  ...baseArgs(network),
  "--github-api-url",
  github.url,
  // moto launches only from a root volume with a size (EC2 takes the image's).
  "--root-volume-size",
  "30",
  // The bootstrap's runner version and checksums given, so no checksum look-up (fleet-actions
  // makes none); the one GitHub read left is the pin's staleness check.
  ...PINNED_RUNNER_ARGS,
  // moto's DescribeInstances over thousands of instances takes longer than the default 20 s on a
  // loaded machine (EC2's does not): the reaper task would time out on the emulator, not the code.
  "--request-timeout-sec",
  "300",
];
const parsed = parseDesiredState({
  args: args(),
  env: { GITHUB_TOKEN: TEST_PAT },
  readTextFile: Deno.readTextFileSync,
});
if (parsed === "help") throw new Error("unexpected help");
const desired: DesiredState = parsed;
// Seeding thousands of instances takes moto longer than a run's per-request timeout.
const { ec2, ddb } = buildClients(desired, AWS_ENV, new CallCounter(), { timeoutMs: 600_000 });

/** One program run through a proxy: its exit code and output. */
interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

async function spawn(command: string, args: string[], env: Record<string, string>): Promise<Ran> {
  const out = await new Deno.Command(command, {
    args,
    env: { ...AWS_ENV, NO_COLOR: "1", GITHUB_ACTIONS: "", GITHUB_STEP_SUMMARY: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** refresh, every task, as a user runs it. */
function runRefresh(awsUrl: string, extra: string[] = []): Promise<Ran> {
  const all = [...args(), ...extra, "--json"];
  return spawn(Deno.execPath(), ["run", "--quiet", ...PERMISSIONS, REFRESH, ...all], {
    AWS_ENDPOINT_URL: awsUrl,
    GITHUB_TOKEN: TEST_PAT,
  });
}

/**
 * A Node preload for fleet-actions' bundle: its DynamoDB client names its endpoint itself
 * (`https://dynamodb.<region>.amazonaws.com`, src/services/dynamodb/dynamo-db-client.ts), which
 * AWS_ENDPOINT_URL does not override, so every HTTPS request to an amazonaws.com host goes to
 * `REFRESH_BENCH_AWS_URL` (the proxy in front of moto) over plain HTTP instead. Nothing leaves
 * 127.0.0.1.
 */
const REDIRECT = `
const http = require("node:http"), https = require("node:https"), { syncBuiltinESMExports } = require("node:module");
const target = new URL(process.env.REFRESH_BENCH_AWS_URL);
const original = https.request;
https.request = function (url, options, callback) {
  const opts = typeof url === "object" && !(url instanceof URL) ? url : options;
  const host = (opts && (opts.hostname || opts.host)) || (url instanceof URL ? url.hostname : "");
  if (!/\\.amazonaws\\.com$/.test(String(host).replace(/:\\d+$/, ""))) return original.apply(this, arguments);
  const cb = typeof options === "function" ? options : callback;
  const headers = { ...(opts.headers || {}) };
  return http.request({ ...opts, protocol: "http:", hostname: target.hostname, host: target.hostname,
    port: target.port, agent: undefined, headers }, cb);
};
syncBuiltinESMExports();
`;
const redirectFile = Deno.makeTempFileSync({ suffix: ".cjs" });
Deno.writeTextFileSync(redirectFile, REDIRECT);

/** fleet-actions' refresh, as its action runs it (inputs from action.yml as INPUT_* variables). */
function runFleetActions(bundle: string, awsUrl: string): Promise<Ran> {
  const ami = desired.launchTemplate.ami;
  const input = (name: string, value: string) => [`INPUT_${name.toUpperCase()}`, value];
  return spawn("node", ["--require", redirectFile, bundle], {
    REFRESH_BENCH_AWS_URL: awsUrl,
    AWS_ENDPOINT_URL: awsUrl,
    GITHUB_API_URL: github.url,
    GITHUB_REPOSITORY: REPO,
    ...Object.fromEntries([
      input("mode", "refresh"),
      input("aws-region", desired.region),
      input("table-name", TABLE),
      input("ami", ami && "id" in ami ? ami.id : ""),
      input("github-token", TEST_PAT),
      input("iam-instance-profile", "runner-profile"),
      input("security-group-ids", network.securityGroupId),
      input("subnet-ids", network.subnetIds[0]),
    ]),
  });
}

/**
 * The default VPC's subnets (a /20 per zone): the test network's /24 subnets hold too few
 * addresses for thousands of instances, and instances outlive their records in moto.
 */
async function roomySubnets(): Promise<string[]> {
  const out = await ec2.send(
    new DescribeSubnetsCommand({ Filters: [{ Name: "default-for-az", Values: ["true"] }] }),
  );
  return (out.Subnets ?? []).map((s) => s.SubnetId!);
}

/** Launches `count` instances from the pool's template (its default version). */
async function launch(count: number): Promise<string[]> {
  return await launchInstances(
    ec2,
    count,
    {
      LaunchTemplate: { LaunchTemplateName: TEMPLATE, Version: "$Default" },
      InstanceType: "t3.micro",
    },
    await roomySubnets(),
  );
}

/**
 * The same pool before every measured run, from scratch: moto reset (terminated instances stay
 * listed in moto, which would slow every later DescribeInstances), one converging run of refresh
 * (table, template, queues, parameters, token), then `total` instances launched from the pool's
 * template, `expired` of them with expired records.
 */
async function seed(): Promise<void> {
  const started = performance.now();
  network = await resetMoto();
  const first = await runRefresh(MOTO_URL);
  if (first.code !== 0) {
    throw new Error(`the converging run failed:\n${first.stdout}${first.stderr}`);
  }
  const ids = await launch(total);
  const now = new Date();
  await putItems(ddb, TABLE, instanceRecords(ids, expired, now));
  // Steady state: refresh swept this pool minutes ago (lib/reaper/sweep.ts), as its memory
  // says; a pool seeded from nothing would make the measured run a sweep. (Sweeping for real here
  // would cost minutes per seed at 6,000 instances: the listing this is about.)
  const templates = await ec2.send(
    new DescribeLaunchTemplatesCommand({ LaunchTemplateNames: [TEMPLATE] }),
  );
  await writeSweep(ddb, TABLE, {
    at: timestamp(new Date(now.getTime() - 60_000)),
    alive: total,
    templateVersion: templates.LaunchTemplates?.[0]?.DefaultVersionNumber ?? 0,
    outdatedIdle: 0,
  }, now);
  console.error(
    `seeded ${total} instances (${expired} expired) in ${
      ((performance.now() - started) / 1000).toFixed(1)
    } s`,
  );
}

/** What one measured run showed. */
interface Measured {
  label: string;
  wallMs: number;
  code: number;
  calls: Map<string, number>;
  upstreamMs: Map<string, number>;
  /** Per operation, when its first call started and its last one ended (ms from the start). */
  spans: Map<string, [number, number]>;
  /** Mean calls in flight in each second of the run. */
  inFlight: number[];
  /** Records left after the run, and how many there would be with every expired one reaped. */
  left: number;
  /** refresh's tasks and how long each took, from its JSON report ("" for fleet-actions). */
  tasks: string;
}

async function measure(
  label: string,
  latencyMs: Record<string, number>,
  program: (awsUrl: string) => Promise<Ran>,
): Promise<Measured> {
  await seed();
  await using proxy = startFaultProxy({ target: MOTO_URL, latencyMs });
  const started = performance.now();
  const ran = await program(proxy.url);
  const ended = performance.now();
  if (ran.code !== 0) console.error(`${label}: exit ${ran.code}\n${ran.stdout}\n${ran.stderr}`);
  const calls = new Map<string, number>();
  const upstreamMs = new Map<string, number>();
  const spans = new Map<string, [number, number]>();
  for (const t of proxy.timeline) {
    calls.set(t.operation, (calls.get(t.operation) ?? 0) + 1);
    upstreamMs.set(t.operation, (upstreamMs.get(t.operation) ?? 0) + t.end - t.start);
    const [from, to] = spans.get(t.operation) ?? [Infinity, -Infinity];
    spans.set(t.operation, [Math.min(from, t.start - started), Math.max(to, t.end - started)]);
  }
  return {
    label,
    wallMs: ended - started,
    code: ran.code,
    calls,
    upstreamMs,
    spans,
    inFlight: inFlightPerSecond(proxy.timeline, started, ended),
    left: await countInstanceRecords(ddb, TABLE),
    tasks: taskTimes(ran.stdout),
  };
}

/** The mean number of calls in flight in each second from `from` to `to`. */
function inFlightPerSecond(timeline: Timing[], from: number, to: number): number[] {
  const seconds = Math.max(1, Math.ceil((to - from) / 1000));
  const busy = new Array(seconds).fill(0);
  for (const { start, end } of timeline) {
    for (let s = Math.floor((start - from) / 1000); s < seconds; s++) {
      const lo = Math.max(start, from + s * 1000);
      const hi = Math.min(end, from + (s + 1) * 1000);
      if (hi <= lo) break;
      busy[s] += hi - lo;
    }
  }
  return busy.map((ms) => ms / 1000);
}

const results: Measured[] = [];
for (let round = 1; round <= rounds; round++) {
  const suffix = rounds > 1 ? ` #${round}` : "";
  for (const latency of latencies) {
    const ms = latency === "latency" ? LATENCY : {};
    results.push(await measure(`refresh, ${latency}${suffix}`, ms, runRefresh));
    console.error(brief(results.at(-1)!));
    if (fleetActions) {
      results.push(
        await measure(
          `fleet-actions, ${latency}${suffix}`,
          ms,
          (url) => runFleetActions(fleetActions, url),
        ),
      );
      console.error(brief(results.at(-1)!));
    }
  }
}

// Report.
const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
console.log(
  `\npool: ${total} instance records, ${expired} expired before each run; ` +
    `latency: ${Object.entries(LATENCY).map(([s, ms]) => `${s} ${ms} ms`).join(", ")}`,
);
if (!fleetActions) {
  console.log("fleet-actions: not measured (pass --fleet-actions <path to its dist/index.js>)");
}
for (const r of results) {
  const calls = sum(r.calls);
  const mean = r.inFlight.reduce((a, b) => a + b, 0) / r.inFlight.length;
  console.log(
    `\n${r.label}: ${(r.wallMs / 1000).toFixed(1)} s wall, exit ${r.code}, ${calls} AWS calls, ` +
      `${mean.toFixed(1)} in flight on average (peak second ${
        Math.max(...r.inFlight).toFixed(1)
      }); ${r.left} records left (${total - expired} when every expired one is reaped)`,
  );
  console.log(
    "  operation                         calls  upstream ms (total, mean)  from s   to s",
  );
  const ops = [...r.calls.keys()].sort((a, b) => r.upstreamMs.get(b)! - r.upstreamMs.get(a)!);
  for (const op of ops) {
    const n = r.calls.get(op)!;
    const ms = r.upstreamMs.get(op)!;
    const [from, to] = r.spans.get(op)!.map((x) => (x / 1000).toFixed(1).padStart(6));
    console.log(
      `  ${op.padEnd(32)} ${String(n).padStart(6)}  ${String(Math.round(ms)).padStart(8)} ${
        String(Math.round(ms / n)).padStart(6)
      }          ${from} ${to}`,
    );
  }
  console.log(
    `  calls in flight, mean per second: ${r.inFlight.map((x) => x.toFixed(1)).join(" ")}`,
  );
  console.log(`  ${histogram(r.inFlight)}`);
}
if (fleetActions) {
  for (const latency of latencies) {
    const ours = results.filter((r) => r.label.startsWith(`refresh, ${latency}`));
    const theirs = results.filter((r) => r.label.startsWith(`fleet-actions, ${latency}`));
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const ratios = ours.map((r, i) => r.wallMs / theirs[i].wallMs);
    console.log(
      `\n${latency}: refresh / fleet-actions wall time, median ${median(ratios).toFixed(2)}x`,
    );
  }
}
ec2.destroy();
ddb.destroy();
Deno.exit(0);

/** One line as a measurement ends (the full report comes at the end). */
function brief(r: Measured): string {
  const calls = [...r.calls.values()].reduce((a, b) => a + b, 0);
  const wall = (r.wallMs / 1000).toFixed(1);
  return `${r.label}: ${wall} s wall, exit ${r.code}, ${calls} AWS calls, ${r.left} records left` +
    (r.tasks ? `; ${r.tasks}` : "");
}

/** "task 1.2 s, …" from refresh's JSON report; "" when the output is not one. */
function taskTimes(stdout: string): string {
  try {
    const report = JSON.parse(stdout) as { results: { task: string; durationMs: number }[] };
    return report.results.map((t) => `${t.task} ${(t.durationMs / 1000).toFixed(1)} s`).join(", ");
  } catch {
    return "";
  }
}

/** One bar per second, height by mean calls in flight (▁ to █, scaled to the peak). */
function histogram(perSecond: number[]): string {
  const bars = "▁▂▃▄▅▆▇█";
  const peak = Math.max(...perSecond, 1e-9);
  return perSecond.map((x) => bars[Math.min(7, Math.floor((x / peak) * 7.999))]).join("");
}
