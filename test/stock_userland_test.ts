/**
 * The generated bootstrap on a stock userland, not on this machine: a Debian root filesystem built
 * from Debian's own packages by mmdebstrap with only what a stock cloud image has (no AWS CLI, no
 * libicu; test/support/stock_rootfs.sh), entered as root with unshare and chroot
 * (test/support/stock_rootfs.ts). The rest is the bootstrap harness (test/support/
 * bootstrap_instance.ts): moto, the fake instance-metadata server, the fake runner package (its
 * config.sh checks for libicu as the real one does) and a control plane playing provision, release
 * and claim. The script keeps the protocol's default timings, so the times printed are what
 * provision, a claim and release would wait for.
 *
 * Run with `deno task test:stock` (which builds the rootfs first, as root); not part of `deno task
 * test`. The rootfs has no network of its own beyond this machine's 127.0.0.1 services: libicu
 * comes from the offline apt repository baked into it.
 */
import assert from "node:assert/strict";
import { DEFAULT_TIMINGS } from "../lib/bootstrap.ts";
import { bootInstance, type BootstrapInstance } from "./support/bootstrap_instance.ts";
import type { Outcome } from "./support/control_plane.ts";
import { resetMoto } from "./support/moto.ts";
import { type RootfsRun, stockRootfs, stockUserland } from "./support/stock_rootfs.ts";
import { hostileJobLines, makeLoot, stolen } from "./support/hostile_job.ts";

/** `dpkg-query` arguments listing the libicu packages and their state. */
const LIBICU_QUERY = ["--show", "--showformat=${Package} ${db:Status-Status}\\n", "libicu[0-9]*"];

/** The installed packages of a `dpkg-query` answer to {@link LIBICU_QUERY}. */
function installed(answer: string): string[] {
  return answer.split("\n").filter((line) => line.endsWith(" installed"))
    .map((line) => line.split(" ")[0]);
}

/** The libicu packages installed in `rootfs`, its dpkg database read from this machine. */
function libicuInRootfs(rootfs: string): string[] {
  const answer = new Deno.Command("dpkg-query", {
    args: [`--admindir=${rootfs}/var/lib/dpkg`, ...LIBICU_QUERY],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  return installed(new TextDecoder().decode(answer.stdout));
}

/** Every file named like the AWS CLI (aws, aws_completer, awscli) on the root filesystem. */
const FIND_AWS_CLI = [
  "find",
  "/",
  "-xdev",
  "(",
  "-name",
  "aws",
  "-o",
  "-name",
  "aws_completer",
  "-o",
  "-name",
  "awscli",
  ")",
  "-print",
];

async function expectOk(
  instance: BootstrapInstance,
  outcome: Outcome,
  what: string,
): Promise<number> {
  assert.ok(outcome.ok, `${what}: ${!outcome.ok && outcome.reason}\n${await instance.log()}`);
  return outcome.elapsedMs;
}

/** Waits for `probe` to give a truthy value; fails with the instance's log and GitHub side. */
async function until<T>(
  instance: BootstrapInstance,
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value) return value;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}\n` +
      `GitHub side: ${JSON.stringify(await instance.github())}\n${await instance.log()}`,
  );
}

/**
 * An operator's setup script, as written for cloud-init: it installs a tool with chmod +x, adds
 * the job user to a group, and records what it ran as. Before that it starts what Ubuntu's first
 * boot starts as cloud-init finishes, apt-daily: a process holding apt's locks (the dpkg frontend
 * lock and the package lists' lock) for 15 s, so the bootstrap's installs meet them.
 */
const SETUP_SCRIPT = `#!/bin/bash
set -euo pipefail
setsid python3 -c '
import fcntl, time
held = [open(p, "w") for p in ("/var/lib/dpkg/lock-frontend", "/var/lib/apt/lists/lock")]
for f in held:
    fcntl.lockf(f, fcntl.LOCK_EX)
open("/run/apt-held", "w").close()
time.sleep(15)
' </dev/null >/dev/null 2>&1 &
while [ ! -e /run/apt-held ]; do sleep 0.1; done
mkdir -p /opt/tools
printf '#!/bin/sh\\necho tool works\\n' >/opt/tools/mytool
chmod +x /opt/tools/mytool
groupadd tools
usermod -aG tools "$REFRESH_JOB_USER"
echo "$(id -u) $(umask) $HOME $REFRESH_JOB_USER" >/opt/tools/setup-env
`;

Deno.test("bootstrap runs a job's full cycle on a stock Debian userland with no AWS CLI and no libicu", async () => {
  const rootfs = stockRootfs();

  // The rootfs as built: what a stock image lacks really is missing (its dpkg database read
  // from here).
  assert.deepEqual(libicuInRootfs(rootfs), [], "libicu in the rootfs");

  const subnetId = (await resetMoto()).subnetIds[0];
  const stock = stockUserland(rootfs);
  await using instance = await bootInstance({
    name: "stock",
    runId: "5001",
    subnetId,
    timings: DEFAULT_TIMINGS,
    runUserData: stock.runUserData,
    preRunnerScript: SETUP_SCRIPT,
  });
  const inside: RootfsRun = stock.last!;
  const { plane, instanceId } = instance;
  // The first job is hostile; the second only looks.
  const loot = await makeLoot(`${instance.dir}/github`);
  // It uses the setup's tool and group, then goes after the token (test/support/hostile_job.ts).
  const job = [
    "/opt/tools/mytool",
    "id -nG | tr ' ' '\\n' | grep -x tools",
    ...hostileJobLines(loot),
  ];
  await Deno.writeTextFile(`${instance.dir}/github/job-step`, job.join("\n"), { mode: 0o644 });
  const name1 = `${instanceId}-1`;
  const name2 = `${instanceId}-2`;

  // Boot, as provision waits for it: UD_OK, then UD_REG_OK for the initial run id, with libicu
  // installed on the way by the runner's own installdependencies.sh. The user data itself has
  // exited (cloud-init completes), its agent running on in the background (no systemd here).
  await expectOk(instance, await plane.provision(instanceId, "5001"), "provision");
  const bootToRegOk = Date.now() - instance.startedAt;
  assert.equal(await instance.exited, 0, await instance.log());
  const seen = plane.seen.get(instanceId)!.map((s) => `${s.state}/${s.runId}`);
  assert.deepEqual(seen.slice(-2), ["UD_OK/5001", "UD_REG_OK/5001"], seen.join(", "));
  let github = await instance.github();
  assert.deepEqual(Object.keys(github.runners), [name1]);
  assert.ok(github.runners[name1].labels.split(",").includes("5001"), github.runners[name1].labels);

  // The job runs on the fake runner, in the environment a job expects: a non-root user of the
  // image with a home directory, a language, umask 022 and passwordless sudo; instance metadata
  // (the role's credentials) is closed to it by a packet filter, not to root.
  await until(instance, "the first job", 30_000, async () => {
    const events = (await instance.github()).events;
    return events.some((e) => e.startsWith(`job ${name1} `)) || undefined;
  });
  const jobEnv = Object.fromEntries(
    (await Deno.readTextFile(`${instance.dir}/github/env-job-${name1}`)).trim().split("\n")
      .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );
  const user = jobEnv.USER;
  assert.ok(user && user !== "root", `the job runs as ${user}`);
  assert.ok(jobEnv.HOME && jobEnv.LANG, `the job's HOME or LANG: ${JSON.stringify(jobEnv)}`);
  const umask = await Deno.readTextFile(`${instance.dir}/github/umask-job-${name1}`);
  assert.equal(umask.trim(), "0022");
  const passwd = await inside.exec(["getent", "passwd", user]);
  assert.equal(passwd.code, 0, `no user ${user} in the rootfs: ${passwd.stderr}`);
  const asUser = ["setpriv", `--reuid=${user}`, `--regid=${user}`, "--init-groups"];
  const sudo = await inside.exec([...asUser, "sudo", "-n", "true"]);
  assert.equal(sudo.code, 0, `sudo as ${user}: ${sudo.stderr}`);
  const tokenRequest = [
    "curl",
    "--silent",
    "--show-error",
    "--max-time",
    "5",
    "--request",
    "PUT",
    "--header",
    "X-aws-ec2-metadata-token-ttl-seconds: 60",
    `${instance.imds.url}/latest/api/token`,
  ];
  const asRoot = await inside.exec(tokenRequest);
  assert.equal(asRoot.code, 0, `root cannot reach instance metadata: ${asRoot.stderr}`);
  const asJob = await inside.exec([...asUser, ...tokenRequest]);
  assert.notEqual(asJob.code, 0, `${user} reached instance metadata: ${asJob.stdout}`);

  // The setup script ran as under cloud-init (root, umask 022, root's HOME, the job user there
  // already), while apt's locks were held, as apt-daily holds them on a first boot: the
  // bootstrap's installs waited. Its tool, folder and group work in the job.
  assert.equal(
    (await inside.readFile("/opt/tools/setup-env")).trim(),
    `0 0022 /root ${user}`,
  );
  assert.match(await instance.log(), /Could not get lock/);
  const out = await until(
    instance,
    "the first job's step",
    30_000,
    async () =>
      (await Deno.readTextFile(`${instance.dir}/github/job-step-${name1}.status`).catch(() =>
        ""
      )) &&
      await Deno.readTextFile(`${instance.dir}/github/job-step-${name1}.out`),
  );
  assert.match(out, /^tool works$/m, out);
  assert.match(out, /^tools$/m, out);
  assert.match(out, /^rewritten [1-9]\d*$/m, out);
  await Deno.writeTextFile(`${instance.dir}/github/job-step`, "true\n");

  // Release: the registration removed, the runner stopped.
  const release1 = await expectOk(instance, await plane.release(instanceId, "5001"), "release");
  github = await instance.github();
  assert.deepEqual(github.runners, {});
  assert.ok(github.events.includes(`stopped ${name1}`), github.events.join("\n"));

  // Back in the pool: a claim for another run registers <id>-2, inside provision's 10 s window.
  const claim = await expectOk(instance, await plane.claim(instanceId, "5002"), "claim");
  github = await instance.github();
  assert.deepEqual(Object.keys(github.runners), [name2]);
  assert.ok(github.runners[name2].labels.split(",").includes("5002"), github.runners[name2].labels);
  await until(instance, "the second job", 30_000, async () => {
    const events = (await instance.github()).events;
    return events.some((e) => e.startsWith(`job ${name2} `)) || undefined;
  });
  const release2 = await expectOk(instance, await plane.release(instanceId, "5002"), "release");
  assert.deepEqual(
    await plane.signal(instanceId).then((s) => [s!.state, s!.runId]),
    ["UD_REMOVE_REG_REMOVE_RUN_OK", "5002"],
  );
  assert.deepEqual((await instance.github()).runners, {});
  // The hostile first job never obtained the registration token: every config.sh run (two
  // registrations, two removals) had it, none of what the job planted did.
  assert.deepEqual((await instance.github()).calls.map((c) => [c.verb, c.token]), [
    ["config", "valid"],
    ["remove", "valid"],
    ["config", "valid"],
    ["remove", "valid"],
  ]);
  assert.deepEqual(await stolen(loot, instance.token), [], "the job's files holding the token");

  // Idle in the pool, waiting to be claimed: what its processes cost (a figure, not a limit;
  // bench/bootstrap_bench.ts measures it on the harness).
  const idleFrom = await inside.cpuSeconds();
  assert.ok(idleFrom > 0, `the instance's processes used no CPU: ${idleFrom}`);
  const idleMs = 20_000;
  await new Promise((resolve) => setTimeout(resolve, idleMs));
  const idlePerMinute = (await inside.cpuSeconds() - idleFrom) * 60_000 / idleMs;

  // libicu came from apt (the offline repository), during this boot, as installdependencies.sh
  // installs it; and the instance never had an AWS CLI.
  const icu = await inside.exec(["dpkg-query", ...LIBICU_QUERY]);
  assert.notDeepEqual(installed(icu.stdout), [], `libicu not installed: ${icu.stdout}`);
  const apt = await inside.installed();
  assert.ok(apt.some((line) => /^apt(-get)? install -y .*\blibicu/.test(line)), apt.join("\n"));
  const aws = await inside.exec(FIND_AWS_CLI);
  assert.equal(aws.code, 0, aws.stderr);
  assert.equal(aws.stdout, "", "an AWS CLI is on the stock rootfs");
  const which = await inside.exec(["sh", "-c", "command -v aws"]);
  assert.notEqual(which.code, 0, `aws is on the instance's PATH: ${which.stdout}`);

  // The instance reached only the harness' services: another port on this machine's 127.0.0.1
  // is not there from inside. And the cached rootfs is unchanged (each run writes to a layer).
  using outsider = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const probe = await inside.exec([
    "curl",
    "--silent",
    "--max-time",
    "5",
    `http://127.0.0.1:${outsider.addr.port}/`,
  ]);
  assert.equal(probe.code, 7, `curl to an unrelayed port: exit ${probe.code} (7: no connection)`);
  assert.deepEqual(libicuInRootfs(rootfs), [], "the run changed the cached rootfs");

  console.log(
    `stock userland (default timings): boot -> UD_REG_OK ${(bootToRegOk / 1000).toFixed(1)} s ` +
      `(libicu installed on the way); claim -> UD_REG_OK ${(claim / 1000).toFixed(1)} s; ` +
      `release -> UD_REMOVE_REG_REMOVE_RUN_OK ${(release1 / 1000).toFixed(1)} s and ` +
      `${(release2 / 1000).toFixed(1)} s; idle ${idlePerMinute.toFixed(2)} CPU-s per minute ` +
      `(${(idlePerMinute / 60 * 100).toFixed(2)}% of one vCPU)`,
  );
});
