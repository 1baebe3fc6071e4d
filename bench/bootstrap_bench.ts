/**
 * Times the generated bootstrap's protocol steps on the test harness (moto, fake instance
 * metadata, fake runner package, all on 127.0.0.1; the bootstrap's own Python AWS client), and
 * measures what an idle instance costs:
 *
 *     sh test/support/tools.sh deno run --allow-net=127.0.0.1 --allow-env --allow-read \
 *       --allow-write --allow-run --allow-sys=osRelease,homedir bench/bootstrap_bench.ts \
 *       [--cycles 3] [--timings protocol|test] [--idle-sec 60]
 *
 * One instance boots and is provisioned, then released and claimed again `cycles` times. It
 * prints boot-to-UD_REG_OK (from starting bash to the signal, as provision sees it, polling every
 * 200 ms), release-to-UD_REMOVE_REG_REMOVE_RUN_OK and claim-to-UD_REG_OK, each as min / median /
 * max, with PROTOCOL.md's timings (default: claim poll 0.25 s, job poll 10 s) or the tests'
 * shorter ones. Then, released and waiting to be claimed, the instance's whole process tree
 * (the bootstrap, its AWS client's heartbeat, claim poll and self-termination loops, and every
 * process they started and reaped) is measured for `--idle-sec` seconds: CPU seconds per idle
 * minute, and that as a share of one vCPU (the target: at most 2%). Exits 1 if a step fails or
 * misses the protocol's own limits (provision 180 s, claim 10 s, release 120 s), or idle costs
 * more than 2% of one vCPU.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { DEFAULT_TIMINGS } from "../lib/bootstrap.ts";
import { bootInstance, TEST_TIMINGS } from "../test/support/bootstrap_instance.ts";
import { resetMoto } from "../test/support/moto.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    cycles: { type: "string" },
    timings: { type: "string" },
    "idle-sec": { type: "string" },
  },
});
const cycles = Number(values.cycles ?? 3);
if (!Number.isSafeInteger(cycles) || cycles < 1) {
  throw new RangeError(`--cycles: expected a whole number >= 1, got ${values.cycles}`);
}
const timingsName = values.timings ?? "protocol";
if (timingsName !== "protocol" && timingsName !== "test") {
  throw new RangeError(`--timings: expected protocol or test, got ${values.timings}`);
}
const timings = timingsName === "protocol" ? { ...DEFAULT_TIMINGS } : TEST_TIMINGS;
const idleSec = Number(values["idle-sec"] ?? 60);
if (!Number.isFinite(idleSec) || idleSec < 5) {
  throw new RangeError(`--idle-sec: expected seconds >= 5, got ${values["idle-sec"]}`);
}

const subnetId = (await resetMoto()).subnetIds[0];
const failures: string[] = [];
const boot: number[] = [];
const release: number[] = [];
const claim: number[] = [];
let idleCpuPerMinute: number | undefined;
{
  await using instance = await bootInstance({ name: "bench", runId: "5000", subnetId, timings });
  const { plane, instanceId } = instance;
  const provisioned = await plane.provision(instanceId, "5000");
  if (provisioned.ok) boot.push(Date.now() - instance.startedAt);
  else failures.push(`provision: ${provisioned.reason}`);
  let runId = "5000";
  for (let i = 1; i <= cycles && failures.length === 0; i++) {
    const released = await plane.release(instanceId, runId);
    if (!released.ok) {
      failures.push(`release ${runId}: ${released.reason}`);
      break;
    }
    release.push(released.elapsedMs);
    runId = String(5000 + i);
    // Measured to the end; the protocol's 10 s is checked below.
    const claimed = await plane.claim(instanceId, runId, { timeoutMs: 120_000 });
    if (!claimed.ok) {
      failures.push(`claim ${runId}: ${claimed.reason}`);
      break;
    }
    claim.push(claimed.elapsedMs);
  }
  if (failures.length === 0) {
    // Idle: released, waiting to be claimed.
    const released = await plane.release(instanceId, runId);
    if (!released.ok) failures.push(`release ${runId}: ${released.reason}`);
    else {
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const before = await instance.cpuSeconds();
      const started = Date.now();
      await new Promise((resolve) => setTimeout(resolve, idleSec * 1000));
      const used = await instance.cpuSeconds() - before;
      idleCpuPerMinute = used / ((Date.now() - started) / 60_000);
    }
  }
  if (failures.length > 0) console.error(await instance.log());
}

const stats = (name: string, values: number[], limitMs: number) => {
  if (values.length === 0) return;
  const sorted = [...values].sort((a, b) => a - b);
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  console.log(
    `${name.padEnd(38)} min ${s(sorted[0])}  median ${
      s(sorted[Math.floor(sorted.length / 2)])
    }  max ${s(sorted.at(-1)!)}  (n=${values.length}, protocol limit ${s(limitMs)})`,
  );
  if (sorted.at(-1)! > limitMs) failures.push(`${name} exceeded ${s(limitMs)}`);
};
const load = await new Deno.Command("cat", { args: ["/proc/loadavg"], stdout: "piped" }).output();
console.log(`bootstrap bench, ${timingsName} timings ${JSON.stringify(timings)}, ${cycles} cycles`);
console.log(
  `load average (1, 5, 15 min) at the end: ${
    new TextDecoder().decode(load.stdout).split(" ").slice(0, 3).join(" ")
  }`,
);
stats("boot -> UD_REG_OK", boot, 180_000);
stats("release -> UD_REMOVE_REG_REMOVE_RUN_OK", release, 120_000);
stats("claim -> UD_REG_OK", claim, 10_000);
if (idleCpuPerMinute !== undefined) {
  const share = idleCpuPerMinute / 60 * 100;
  console.log(
    `${"idle (waiting to be claimed)".padEnd(38)} ${idleCpuPerMinute.toFixed(2)} CPU-s per ` +
      `minute = ${share.toFixed(2)}% of one vCPU (over ${idleSec} s, target at most 2%)`,
  );
  if (share > 2) failures.push(`idle CPU ${share.toFixed(2)}% of one vCPU exceeds 2%`);
}
if (failures.length > 0) {
  console.error(`FAILED: ${failures.join("; ")}`);
  Deno.exit(1);
}
// The shared moto server would keep the process alive.
Deno.exit(0);
