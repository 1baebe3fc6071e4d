/**
 * The generated bootstrap run for real (test/support/bootstrap_instance.ts) where real pools
 * meet it after day one: an operator's setup script written for cloud-init's environment, a
 * hostile job under strict mode, the real runner's timings inside provision's 10 s claim window,
 * and the runner's own failure modes (a registration that reached GitHub, a chatty listener).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { bootInstance, type BootstrapInstance } from "./support/bootstrap_instance.ts";
import type { Outcome } from "./support/control_plane.ts";
import { resetMoto } from "./support/moto.ts";
import { AWS_CLIENT_PY } from "../lib/bootstrap_aws_client.ts";
import { hostileJobLines, makeLoot, stolen } from "./support/hostile_job.ts";

const TIMINGS = { heartbeatSec: 5, selfTerminateCheckSec: 60, claimPollSec: 0.25, jobPollSec: 1 };
const concurrent = { sanitizeOps: false, sanitizeResources: false, sanitizeExit: false };

async function until<T>(what: string, ms: number, check: () => Promise<T | undefined | false>) {
  const deadline = Date.now() + ms;
  while (true) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function expectOk(instance: BootstrapInstance, outcome: Outcome, what: string) {
  if (!outcome.ok) {
    assert.fail(`${what}: ${outcome.reason}\n--- bootstrap log ---\n${await instance.log()}`);
  }
}

/** The job step's output of registration `n`, once it has finished. */
async function jobOutput(instance: BootstrapInstance, n: number): Promise<string> {
  const base = join(instance.dir, "github", `job-step-${instance.instanceId}-${n}`);
  return await until(`job step ${n}`, 60_000, async () => {
    const status = await Deno.readTextFile(`${base}.status`).catch(() => undefined);
    return status !== undefined && await Deno.readTextFile(`${base}.out`);
  });
}

async function waitingForClaim(instance: BootstrapInstance, count = 1) {
  await until("the instance waiting for a claim", 90_000, async () => {
    const log = await instance.log();
    return (log.match(/waiting for a run id in the instance record/g) ?? []).length >= count;
  });
}

Deno.test("bootstrap after day one", async (t) => {
  const subnetId = (await resetMoto()).subnetIds[0];

  const setup = t.step({
    name: "the setup script runs as setup scripts expect: root, umask 022, a HOME, the job user " +
      "already there; a tool it installs, a folder it makes and a group it adds work in the job",
    ...concurrent,
    fn: async () => {
      const group = "refresh-test-tools";
      // As operators write them for cloud-init: install a tool with chmod +x, make a tool
      // folder, let the job user use a group (as `usermod -aG docker` does).
      const script = [
        "#!/bin/bash",
        "set -euo pipefail",
        'tools="$REFRESH_RUNNER_DIR/../tools"',
        'mkdir -p "$tools/hostedtoolcache"',
        'touch "$tools/hostedtoolcache/node"',
        `printf '#!/bin/sh\\necho tool works\\n' >"$tools/mytool"`,
        'chmod +x "$tools/mytool"',
        `getent group ${group} >/dev/null || groupadd ${group}`,
        `usermod -aG ${group} "$REFRESH_JOB_USER"`,
        'printf "%s %s %s %s %s\\n" "$(id -u)" "$(umask)" "$HOME" "$LANG" "$(pwd)" >"$tools/setup-env"',
      ].join("\n");
      await using instance = await bootInstance({
        subnetId,
        name: "setup",
        runId: "8001",
        timings: TIMINGS,
        preRunnerScript: script,
        jobSudo: false,
      });
      const tools = join(instance.dir, "boot", "tools");
      await Deno.writeTextFile(
        join(instance.dir, "github", "job-step"),
        [
          `'${tools}/mytool'; echo "tool exit $?"`,
          `ls '${tools}/hostedtoolcache'; echo "cache exit $?"`,
          `id -nG | tr ' ' '\\n' | grep -x ${group}; echo "group exit $?"`,
        ].join("\n"),
      );
      await expectOk(instance, await instance.plane.provision(instance.instanceId, "8001"), "run");
      const [uid, umask, home, lang, cwd] = (await Deno.readTextFile(join(tools, "setup-env")))
        .trim().split(" ");
      assert.deepEqual([uid, umask, home, lang, cwd], ["0", "0022", "/root", "C.UTF-8", "/"]);
      assert.equal((await Deno.stat(join(tools, "mytool"))).mode! & 0o777, 0o755);
      assert.equal((await Deno.stat(join(tools, "hostedtoolcache"))).mode! & 0o777, 0o755);
      assert.equal(
        await jobOutput(instance, 1),
        `tool works\ntool exit 0\nnode\ncache exit 0\n${group}\ngroup exit 0\n`,
      );
    },
  });

  const hostile = t.step({
    name: "under strict mode a hostile job never obtains the registration token across its " +
      "release and a new claim, and nothing it leaves runs into the next job",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "hostile",
        runId: "8101",
        timings: TIMINGS,
        jobSudo: false,
      });
      const { dir, plane, instanceId, token } = instance;
      const loot = await makeLoot(join(dir, "github"));
      // The job: rewrites every runner file it can, leaves a daemon reading every process
      // environment it can (test/support/hostile_job.ts); tries sudo and the credentials cache.
      await Deno.writeTextFile(
        join(dir, "github", "job-step"),
        [
          ...hostileJobLines(loot),
          'sudo -n true 2>/dev/null; echo "sudo exit $?"',
          `cat '${dir}/boot/private/credentials.json' 2>/dev/null; echo "cache exit $?"`,
        ].join("\n"),
      );
      await expectOk(instance, await plane.provision(instanceId, "8101"), "run");
      const out = await jobOutput(instance, 1);
      // Replaced what its own runner directory holds (the directory is the job user's).
      assert.match(out, /^rewritten [1-9]\d*$/m, out);
      assert.match(out, /^sudo exit [1-9]\d*$/m, out);
      assert.match(out, /^cache exit 1$/m, out);
      // What a job's crontab and lingering user manager would look like (cron refuses the job
      // user, so a test plants them as root): the release removes them.
      const system = join(dir, "system");
      const crontab = join(system, "var", "spool", "cron", "crontabs", instance.runnerUser);
      const linger = join(system, "var", "lib", "systemd", "linger", instance.runnerUser);
      for (const path of [crontab, linger]) {
        await Deno.mkdir(join(path, ".."), { recursive: true });
        await Deno.writeTextFile(path, "* * * * * cat /proc/*/environ\n");
      }
      for (const list of ["cron.deny", "at.deny"]) {
        assert.match(await Deno.readTextFile(join(system, "etc", list)), /^refresh-test-runner$/m);
      }
      await expectOk(instance, await plane.release(instanceId, "8101"), "release");
      await Deno.writeTextFile(join(dir, "github", "job-step"), "true\n");
      await plane.pool(instanceId);
      await expectOk(
        instance,
        await plane.claim(instanceId, "8102", { timeoutMs: 30_000 }),
        "claim",
      );
      await expectOk(instance, await plane.release(instanceId, "8102"), "second release");
      for (const path of [crontab, linger]) await assert.rejects(Deno.stat(path));

      // The token reached nothing the job planted, in no form.
      const github = await instance.github();
      assert.deepEqual(github.calls.map((c) => [c.verb, c.token]), [
        ["config", "valid"],
        ["remove", "valid"],
        ["config", "valid"],
        ["remove", "valid"],
      ]);
      assert.deepEqual(await stolen(loot, token), [], "files of the job's holding the token");
      assert.ok(!(await instance.log()).includes(token));
    },
  });

  const timing = t.step({
    name: "with the real runner's timings a warm instance's first and later claims reach " +
      "UD_REG_OK within 7.5 s",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "timing",
        runId: "8201",
        timings: TIMINGS,
        runnerTimings: { config: 3, listen: 2, coldStart: 2 },
      });
      const { plane, instanceId } = instance;
      await plane.pool(instanceId);
      await waitingForClaim(instance);
      assert.match(await instance.log(), /runner runtime warmed in \d+s \(version 2\.323\.0\)/);
      const first = await plane.claim(instanceId, "8202", { timeoutMs: 7_500 });
      await expectOk(instance, first, "first claim of a warm instance");
      await expectOk(instance, await plane.release(instanceId, "8202"), "release");
      await plane.pool(instanceId);
      await waitingForClaim(instance, 2);
      const later = await plane.claim(instanceId, "8203", { timeoutMs: 7_500 });
      await expectOk(instance, later, "a later claim");
      console.log(`claim -> UD_REG_OK: first ${first.elapsedMs} ms, later ${later.elapsedMs} ms`);
    },
  });

  const retry = t.step({
    name: "a registration whose first attempt reached GitHub succeeds on the retry (--replace), " +
      "and a runner printing 200 KB after 'Listening for Jobs' is still seen listening",
    ...concurrent,
    fn: async () => {
      await using instance = await bootInstance({
        subnetId,
        name: "retry",
        runId: "8301",
        timings: TIMINGS,
      });
      const github = join(instance.dir, "github");
      await Deno.writeTextFile(join(github, "fail-after-register"), "1\n");
      await Deno.writeTextFile(join(github, "listen-spam"), "200000\n");
      await expectOk(
        instance,
        await instance.plane.provision(instance.instanceId, "8301"),
        "provision",
      );
      const side = await instance.github();
      assert.deepEqual(Object.keys(side.runners), [`${instance.instanceId}-1`]);
      assert.deepEqual(side.calls.map((c) => [c.verb, c.args.includes("--replace")]), [
        ["config", true],
        ["config", true],
      ]);
    },
  });

  const interruption = t.step({
    name: "an idle instance withdraws within one check of a spot interruption notice (a claim " +
      "then fails at once); a busy one finishes its job and withdraws after its release on a " +
      "rebalance recommendation",
    ...concurrent,
    fn: async () => {
      await using idle = await bootInstance({
        subnetId,
        name: "notice",
        runId: "8401",
        timings: TIMINGS,
      });
      await using busy = await bootInstance({
        subnetId,
        name: "rebalance",
        runId: "8501",
        timings: TIMINGS,
      });
      // The idle one: in the pool, waiting for a claim, when EC2 announces the interruption.
      await idle.plane.pool(idle.instanceId);
      await waitingForClaim(idle);
      idle.imds.announce("spot-interruption");
      const announced = Date.now();
      const withdrawn = await until("the record's interruption", 10_000, async () => {
        const record = await idle.plane.record(idle.instanceId);
        return typeof record?.interruption === "string" && record;
      });
      const withdrewMs = Date.now() - announced;
      assert.match(String(withdrawn.interruption), /^spot-interruption at \d{4}-/);
      assert.equal(withdrawn.state, "idle");
      assert.ok(Date.parse(String(withdrawn.threshold)) <= Date.now(), "its record expired");
      const claim = await idle.plane.claim(idle.instanceId, "8402");
      assert.deepEqual(claim.ok ? "claimed" : claim.reason, "the claim's condition failed");
      assert.ok(claim.elapsedMs < 1_000, `the claim took ${claim.elapsedMs} ms to fail`);
      assert.match(await idle.log(), /spot-interruption \(\{"action": ?"terminate"/);

      // The busy one: running a job when EC2 recommends a rebalance; nothing changes until its
      // release, then it withdraws instead of waiting for a claim.
      await expectOk(busy, await busy.plane.provision(busy.instanceId, "8501"), "provision");
      busy.imds.announce("rebalance-recommendation");
      await new Promise((resolve) => setTimeout(resolve, 4_000));
      const running = await busy.plane.record(busy.instanceId);
      assert.deepEqual([running?.state, running?.interruption], ["running", undefined]);
      await expectOk(busy, await busy.plane.release(busy.instanceId, "8501"), "release");
      const after = await until("the released instance's withdrawal", 15_000, async () => {
        const record = await busy.plane.record(busy.instanceId);
        return typeof record?.interruption === "string" && record;
      });
      assert.match(String(after.interruption), /^rebalance-recommendation at /);
      console.log(`spot interruption notice -> withdrawn: ${withdrewMs} ms`);
    },
  });

  await Promise.all([setup, hostile, timing, retry, interruption]);
});

Deno.test("the AWS client names each partition's endpoints as the AWS SDK does", async () => {
  // The client without its last line (main()), its dns_suffix asked directly.
  const source = AWS_CLIENT_PY.replace(/\nmain\(\)\n$/, "\n");
  const regions = [
    "us-east-1",
    "cn-north-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "us-isob-east-1",
    "us-isof-south-1",
    "eu-isoe-west-1",
    "eusc-de-east-1",
  ];
  const program = `import sys\nsys.argv = ["aws.py", "r", "t", "c", "i", "get"]\n${source}\n` +
    `for region in ${JSON.stringify(regions)}:\n    print(dns_suffix(region))\n`;
  const { stdout, success } = await new Deno.Command("python3", {
    args: ["-I", "-S", "-c", program],
    stdout: "piped",
  }).output();
  assert.ok(success);
  assert.deepEqual(new TextDecoder().decode(stdout).trim().split("\n"), [
    "amazonaws.com",
    "amazonaws.com.cn",
    "amazonaws.com",
    "c2s.ic.gov",
    "sc2s.sgov.gov",
    "csp.hci.ic.gov",
    "cloud.adc-e.uk",
    "amazonaws.eu",
  ]);
});
