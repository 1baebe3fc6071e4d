/**
 * What the warm pool buys, measured on the test harness (moto, the fake GitHub, the fake runner
 * package, fake instance metadata, the generated user data run for real by bash; all on
 * 127.0.0.1):
 *
 *     sh test/support/tools.sh deno run --allow-net=127.0.0.1 --allow-env --allow-read \
 *       --allow-write --allow-run --allow-sys=osRelease,homedir bench/warm_pool_bench.ts \
 *       [--rounds 3]
 *
 * - **warm**: refresh (`--warm-pool large=1`) launches and, once ready, advertises an instance;
 *   provision picks the message up and claims it: claim to `UD_REG_OK` for the claiming run.
 * - **cold**: provision's own launch (CreateFleet from the template, `$Default`), the user data
 *   started at once, the record written and `UD_REG_OK` awaited: CreateFleet to `UD_REG_OK`.
 *   The harness has no VM boot: on EC2 add the instance's boot (30-90 s) to the cold figure only.
 * - **converged writes**: with `--warm-pool large=2 --warm-pool-hold-min 2`, both ready and
 *   advertised: the writes of a run at once, and of a run once half the hold has passed (61 s
 *   later), by operation.
 *
 * Prints min / median / max of each time, the calls, and the load average. Exits 1 when a step
 * fails.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { startWarmHarness } from "../test/support/warm_harness.ts";

const { values } = parseArgs({ args: Deno.args, options: { rounds: { type: "string" } } });
const rounds = Number(values.rounds ?? 3);
if (!Number.isSafeInteger(rounds) || rounds < 1) {
  throw new RangeError(`--rounds: expected a whole number >= 1, got ${values.rounds}`);
}

const failures: string[] = [];
const warm: number[] = [];
const cold: number[] = [];

function stats(ms: number[]): string {
  if (ms.length === 0) return "no sample";
  const s = [...ms].sort((a, b) => a - b);
  const f = (v: number) => `${(v / 1000).toFixed(1)} s`;
  return `min ${f(s[0])}, median ${f(s[Math.floor(s.length / 2)])}, max ${
    f(s.at(-1)!)
  } (${s.length})`;
}

{
  await using pool = await startWarmHarness(["--warm-pool", "large=1"]);
  const built = await pool.refresh();
  if (built.code !== 0) failures.push(`build: ${JSON.stringify(built.report.results)}`);
  const booted = new Set<string>();
  for (let round = 1; round <= rounds && failures.length === 0; round++) {
    // The warm instance this round claims: launched by refresh (the first run, or the last
    // round's replacement), booted, advertised once ready.
    const ids = (await pool.instancesTagged(/^warm-large-/)).filter((id) => !booted.has(id));
    if (ids.length !== 1) {
      failures.push(`round ${round}: expected one new warm instance, found ${ids.length}`);
      break;
    }
    const [id] = ids;
    booted.add(id);
    await pool.boot(id);
    await pool.waitReady(id);
    await pool.refresh(["--only", "warm-pool"]);
    const message = await pool.pickUp("large");
    if (message?.id !== id) {
      failures.push(`round ${round}: picked up ${JSON.stringify(message)}, expected ${id}`);
      break;
    }
    const claimed = await pool.plane.claim(id, String(8000 + round));
    if (!claimed.ok) failures.push(`round ${round}: warm claim: ${claimed.reason}`);
    else warm.push(claimed.elapsedMs);

    // Cold, as provision launches when the pool is empty.
    const runId = String(9000 + round);
    const started = Date.now();
    const [coldId] = await pool.provisionFleet(runId);
    await pool.boot(coldId);
    const provisioned = await pool.plane.provision(coldId, runId, { instanceType: "t3.micro" });
    if (!provisioned.ok) failures.push(`round ${round}: cold provision: ${provisioned.reason}`);
    else cold.push(Date.now() - started);

    // The replacement for the claimed warm instance.
    await pool.refresh(["--only", "warm-pool"]);
  }
}

let converged = "";
if (failures.length === 0) {
  await using pool = await startWarmHarness([
    "--warm-pool",
    "large=2",
    "--warm-pool-hold-min",
    "2",
  ]);
  await pool.refresh();
  const ids = await pool.instancesTagged(/^warm-large-/);
  for (const id of ids) await pool.boot(id);
  for (const id of ids) await pool.waitReady(id);
  const advertised = await pool.refresh(["--only", "warm-pool"]);
  const atOnce = await pool.refresh(["--only", "warm-pool"]);
  await new Promise((resolve) => setTimeout(resolve, 61_000));
  const later = await pool.refresh(["--only", "warm-pool"]);
  const writes = (calls: Record<string, number>) =>
    JSON.stringify(
      Object.fromEntries(
        Object.entries(calls).filter(([op]) =>
          /\.(Update|Put|Send|Create|Delete|Terminate)/.test(op)
        ),
      ),
    );
  for (
    const [name, run] of [["advertise", advertised], ["at once", atOnce], [
      "61 s later",
      later,
    ]] as const
  ) {
    if (run.code !== 0) failures.push(`converged ${name}: ${JSON.stringify(run.report.results)}`);
  }
  converged = [
    `converged warm pool (large=2, hold 2 min), warm-pool task alone:`,
    `  first run after ready (advertise): ${advertised.report.writeCalls} writes ${
      writes(advertised.report.calls)
    }`,
    `  a run at once: ${atOnce.report.writeCalls} writes, ${
      Object.values(atOnce.report.calls).reduce((a, b) => a + b, 0)
    } calls ${JSON.stringify(atOnce.report.calls)}`,
    `  a run past half the hold: ${later.report.writeCalls} writes ${writes(later.report.calls)}`,
  ].join("\n");
}

console.log(`warm claim -> UD_REG_OK:   ${stats(warm)}`);
console.log(`cold CreateFleet -> UD_REG_OK: ${stats(cold)} (no VM boot on the harness)`);
if (converged) console.log(converged);
const load = await new Deno.Command("cat", { args: ["/proc/loadavg"], stdout: "piped" }).output();
console.log(`load average: ${new TextDecoder().decode(load.stdout).trim()}`);
if (failures.length) {
  console.error(failures.join("\n"));
  Deno.exit(1);
}
Deno.exit(0);
