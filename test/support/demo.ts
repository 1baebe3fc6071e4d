/**
 * `deno task demo`: the whole job on this machine, with no AWS account and no GitHub token.
 *
 * Starts moto (an AWS emulator), a fake GitHub API and a fake runner package on 127.0.0.1, then:
 * 1. runs refresh twice with the same desired state: the first run builds the pool (table, launch
 *    template with the generated bootstrap and a small setup script, queues, parameters,
 *    registration token), the second changes nothing;
 * 2. boots one instance from the template it built, as fleet-actions' provision launches one
 *    (CreateFleet from `$Default`, tagged with its run id), and runs the template's user data for
 *    real (test/support/bootstrap_instance.ts, against moto and a fake instance-metadata server);
 * 3. plays provision, which claims the instance for run 1001 (it registers a runner for that run,
 *    which takes the job), then release (the runner is removed; the instance waits idle in the
 *    pool, shown by a refresh run), then a claim from the pool for run 1002 (a new registration,
 *    a job) and its release; no run claims it again, so its record expires (the demo moves the
 *    threshold rather than wait out the idle time);
 * 4. runs refresh's reaper, which terminates the expired instance and removes its items.
 * Each step prints the time since the start, and each refresh run its report with the pool view.
 * Exits 1 if a step fails or the second run wrote anything.
 *
 * The fake GitHub serves `actions/runner`'s newest release with the fake package's checksum, so
 * refresh resolves `--runner-version latest` as it would on github.com.
 */
import { join } from "node:path";
import { DescribeInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { main } from "../../refresh.ts";
import { TASKS } from "../../lib/config.ts";
import { runUserData, type UserDataRun } from "./bootstrap_instance.ts";
import { ControlPlane, type Outcome } from "./control_plane.ts";
import { type FakeImds, startFakeImds } from "./imds.ts";
import { AWS_ENV, MOTO_URL, resetMoto } from "./moto.ts";
import {
  defaultUserData,
  fleetInstanceIds,
  instanceTags,
  launchAsProvision,
  motoClients,
  REGION,
  startFakeRunnerRelease,
  TABLE,
  TEMPLATE,
} from "./pool.ts";
import { readGithubSide } from "./runner_package.ts";

/** A PAT-shaped token the fake GitHub accepts; refresh masks it in everything it prints. */
const DEMO_PAT = "ghp_DemoPersonalAccessToken00000000000000";
/** How long a released instance waits idle before its record expires (refresh's default). */
const IDLE_SEC = 300;

const dim = (text: string) => Deno.noColor ? text : `\x1b[2m${text}\x1b[22m`;
const bold = (text: string) => Deno.noColor ? text : `\x1b[1m${text}\x1b[22m`;

const started = performance.now();
/** Prints one step with the seconds since the demo started. */
function step(text: string): void {
  const at = ((performance.now() - started) / 1000).toFixed(1).padStart(5);
  console.log(`${bold(`[${at} s]`)} ${text}`);
}

// The AWS SDK's credential chain reads the process environment.
for (const [key, value] of Object.entries(AWS_ENV)) Deno.env.set(key, value);

// An empty account with a VPC, two subnets and a security group for the runners.
const network = await resetMoto();
const dir = await Deno.makeTempDir({ prefix: "refresh-demo-" });
// The fake GitHub serves actions/runner's newest release: the fake runner package, which accepts
// only the registration token the fake GitHub hands out (known once refresh asked for it).
const release = await startFakeRunnerRelease(dir, {
  pat: DEMO_PAT,
  publishedAt: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
});
const { github, runnerPackage, githubDir } = release;
// The operator's own setup, run on each instance before the runner starts.
const setup = join(dir, "setup.sh");
await Deno.writeTextFile(
  setup,
  '#!/bin/bash\nset -eu\necho "setting up the tools every job needs"\n',
);

const args = [
  "--region",
  REGION,
  "--repo",
  "acme/widgets",
  "--ami",
  "ami-1e749f67",
  "--iam-instance-profile",
  "runner-profile",
  "--security-group-ids",
  network.securityGroupId,
  "--subnet-ids",
  network.subnetIds.join(","),
  "--instance-type",
  "t3.micro",
  // moto, unlike EC2, wants a size on a root volume mapping that overrides only its type.
  "--root-volume-size",
  "30",
  "--pre-runner-script",
  setup,
  "--github-api-url",
  github.url,
  // Where the instance downloads the runner: the fake package, not github.com.
  "--runner-download-url",
  runnerPackage.downloadUrl,
];
const env = { ...AWS_ENV, GITHUB_TOKEN: DEMO_PAT };
const aws = motoClients();
const { ec2 } = aws;
const plane = new ControlPlane({ ddb: aws.ddb, table: TABLE });

console.log(bold("refresh demo"));
console.log(dim(`moto (AWS emulator) at ${MOTO_URL}, fake GitHub API at ${github.url}`));
console.log(dim(`tasks: ${TASKS.join(", ")}`));
console.log(dim(`command: refresh.ts ${args.join(" ")}\n`));

/** Runs refresh's entry in this process; prints its report; returns its exit code and writes. */
async function refresh(title: string, extra: string[] = []) {
  console.log(bold(`\n── ${title} ──`));
  const began = performance.now();
  let writes = -1;
  const code = await main([...args, ...extra], env, {
    stdout: (text) => {
      console.log(text);
      const m = /(\d+) writes$/m.exec(text);
      if (m) writes = Number(m[1]);
    },
    stderr: (text) => console.error(dim(text)),
    readTextFile: (path) => Deno.readTextFileSync(path),
  });
  console.log(dim(`(exit code ${code}, ${Math.round(performance.now() - began)} ms)`));
  return { code, writes };
}

let instance: UserDataRun | undefined;
const failures: string[] = [];
/** Records a failed check (the demo goes on, then exits 1). */
function check(ok: boolean, what: string): boolean {
  if (!ok) failures.push(what);
  return ok;
}
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Stops the demo (it cleans up and exits 1) when a control-plane step failed. */
async function must(outcome: Outcome, what: string): Promise<void> {
  if (outcome.ok) return;
  throw new Error(
    `${what}: ${outcome.reason}\n${dim(`--- instance log ---\n${await instance?.log()}`)}`,
  );
}

/** Stops the demo unless the fake runner took a job under `runner` (its listener started one). */
async function mustRunJob(runner: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const { events } = await readGithubSide(githubDir);
    if (events.some((e) => e.startsWith(`job ${runner} `))) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`runner ${runner} took no job`);
}

/** Phase 1: refresh builds the pool, then finds nothing to do with the same desired state. */
async function buildPool(): Promise<void> {
  step("refresh builds the pool, then runs again with the same desired state");
  const first = await refresh("first run: builds the pool");
  const second = await refresh("second run, same desired state: nothing to do");
  check(first.code === 0 && second.code === 0, `refresh exit codes ${first.code}/${second.code}`);
  console.log(
    second.writes === 0
      ? bold(`second run made ${second.writes} writes: refresh is idempotent.`)
      : bold(`unexpected: the second run made ${second.writes} writes`),
  );
  check(second.writes === 0, "the second run wrote");
  // The fake runner accepts the token refresh got from the fake GitHub, and no other.
  await release.acceptIssuedToken();
}

/**
 * Phase 2: provision's launch (CreateFleet, instant, the template's `$Default`, its own tags);
 * the instance's id and tags and the user data of the version it was launched from.
 */
async function launch(): Promise<
  { instanceId: string; tags: Record<string, string>; script: string }
> {
  const fleet = await launchAsProvision(ec2, { runId: "1001", subnetId: network.subnetIds[0] });
  const [instanceId] = fleetInstanceIds(fleet);
  if (!instanceId) throw new Error(`CreateFleet launched nothing: ${JSON.stringify(fleet.Errors)}`);
  const tags = await instanceTags(ec2, instanceId);
  const { version, script } = await defaultUserData(ec2);
  step(
    `provision launches ${instanceId} from ${TEMPLATE} version ${version.VersionNumber} ` +
      "(CreateFleet, tagged InitialRunId=1001)",
  );
  return { instanceId, tags, script };
}

/** Phase 3: the instance boots: its user data, exactly as the template holds it, runs with bash. */
async function boot(instanceId: string, script: string, imdsUrl: string): Promise<UserDataRun> {
  const run = await runUserData({
    // One directory for the instance and the fake runner's GitHub side, as the pool test does:
    // the harness opens it to the runner's own user.
    dir,
    script,
    imdsUrl,
    awsEndpoint: MOTO_URL,
  });
  step(`${instanceId} boots: its user data (the generated bootstrap) runs`);
  return run;
}

/**
 * Phase 4: the control plane at work: provision claims the new instance for run 1001, release
 * returns it to the pool, a claim takes it for run 1002, release again; a job runs on each.
 */
async function serveTwoRuns(instanceId: string): Promise<void> {
  const provisioned = await plane.provision(instanceId, "1001", {
    timeoutMs: 90_000,
    instanceType: "t3.micro",
  });
  await must(provisioned, "provision");
  await mustRunJob(`${instanceId}-1`);
  step(
    `provision: runner ${instanceId}-1 registered for run 1001 (UD_REG_OK, ` +
      `${secs(provisioned.elapsedMs)} after launch); it takes the run's job`,
  );

  const released = await plane.release(instanceId, "1001", { idleTimeSec: IDLE_SEC });
  await must(released, "release");
  step(
    `release: the job is done; ${instanceId}-1 deregistered ` +
      `(UD_REMOVE_REG_REMOVE_RUN_OK, ${secs(released.elapsedMs)}); the instance waits idle ` +
      `in the pool for the idle time (${IDLE_SEC} s), ready for the next run's claim`,
  );
  await refresh("refresh: the pool holds one idle instance", ["--only", "reaper"]);

  const claimed = await plane.claim(instanceId, "1002");
  await must(claimed, "claim");
  await mustRunJob(`${instanceId}-2`);
  step(
    `claim: provision takes the idle instance for run 1002; runner ${instanceId}-2 registered ` +
      `(UD_REG_OK, ${secs(claimed.elapsedMs)} after the claim) and runs the job`,
  );
  const again = await plane.release(instanceId, "1002", { idleTimeSec: IDLE_SEC });
  await must(again, "release");
  step(
    `release: ${instanceId}-2 deregistered (UD_REMOVE_REG_REMOVE_RUN_OK, ` +
      `${secs(again.elapsedMs)}); idle again`,
  );
}

/** Phase 5: no claim comes, the record expires, and refresh's reaper takes the instance away. */
async function expireAndReap(instanceId: string): Promise<void> {
  // The idle time passes with no claim: the demo moves the threshold instead of waiting.
  await plane.expire(instanceId);
  step(
    `no run claims it within the idle time: its record expires (the demo moves its threshold ` +
      `into the past rather than wait ${IDLE_SEC} s)`,
  );
  const reaped = await refresh("refresh: the reaper takes the expired instance away", [
    "--only",
    "reaper",
  ]);
  const after = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
  const state = after.Reservations?.[0]?.Instances?.[0]?.State?.Name;
  if (reaped.code !== 0 || state !== "terminated") {
    throw new Error(`the reaper left ${instanceId} ${state} (exit code ${reaped.code})`);
  }
  step(`the reaper terminated ${instanceId} and removed its items from the table`);
}

let imds: FakeImds | undefined;
try {
  await buildPool();
  console.log(bold("\n── a runner's life ──"));
  const { instanceId, tags, script } = await launch();
  imds = startFakeImds({ instanceId, region: REGION, tags });
  instance = await boot(instanceId, script, imds.url);
  await serveTwoRuns(instanceId);
  await expireAndReap(instanceId);
  // The machine is gone: its processes stop with it.
  await instance.kill();
  const side = await readGithubSide(githubDir);
  const calls = side.calls.map((c) => `${c.verb} (${c.token} token)`).join(", ");
  console.log(
    dim(
      `\nGitHub's side of the instance: ${calls}; runners left registered: ` +
        `${Object.keys(side.runners).length}`,
    ),
  );
} catch (error) {
  failures.push(error instanceof Error ? error.message : String(error));
} finally {
  await instance?.kill();
  await imds?.close();
  aws.destroy();
  await release.close();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

if (failures.length === 0) {
  step(bold("done: a pool built, a runner's whole life, and an idempotent second run."));
} else {
  console.log(bold(`unexpected:\n- ${failures.join("\n- ")}`));
}
console.log(
  dim(`the registration token came from the fake GitHub: ${github.issued.length} issued`),
);
// Exiting (rather than returning) also stops moto, which would keep the process alive.
Deno.exit(failures.length === 0 ? 0 : 1);
