/**
 * The garbage collector of the pool: instance lifecycle maintenance. {@link reapInstances} runs
 * these phases, in this order, each in its module under lib/reaper/:
 *
 * 1. **read** (reads.ts): every instance record, every heartbeat's and worker signal's key and
 *    age; the pool's launch templates and live instances, each with its proof of ownership; by
 *    id, the instances records name that the pool listing does not hold.
 * 2. **classify** (classify.ts, pure): what to lock, terminate and expunge, decided from what was
 *    read, never from a record alone; and what to report and leave alone. **Rollout and health**
 *    (drain.ts): idle pool instances of another template version, or unable to serve, are
 *    drained: locked only if still idle and unchanged since the read, then terminated and
 *    expunged like expired ones.
 * 3. **lock** (lock.ts): DESIGN.md's conditional update to `terminated`.
 * 4. **terminate** (terminate.ts): TerminateInstances of instances proven the pool's only: locked
 *    ones, ones whose record is already `terminated` (a crash between phases), orphans.
 * 5. **expunge** (expunge.ts): per instance known to be gone, its heartbeat and worker signal
 *    first, its record last; and the sweep of stray heartbeats and worker signals (those without
 *    a record, older than the grace or of an instance EC2 reports terminated: ended.ts).
 * 6. **runners** (runners.ts): deletes the registrations provably the pool's (its label, or an
 *    instance it knows) whose instance is provably dead (terminated by this run, or reported
 *    terminated by EC2), busy ones excepted, within a time budget.
 *
 * The report (report.ts) collects counts, changes, warnings and errors; a failed operation never
 * stops the others, and the task fails at the end when one did. Once the run's deadline has
 * passed no new unit of work starts, and what was left is reported.
 *
 * Writes: UpdateItem and BatchWriteItem on the table, TerminateInstances, runner deletions. Under
 * dry-run it reads, and lists what it would lock, terminate, drain, expunge and delete.
 *
 * @module
 */
import { timestamp } from "./contract.ts";
import type { Drain } from "./rollout.ts";
import type { TaskOutcome } from "./task.ts";
import { classify, parseTimestamp, type Plan, unrecordedYoung } from "./reaper/classify.ts";
import { deadline, type ReaperContext, type ReaperOptions } from "./reaper/context.ts";
import { drainPhase } from "./reaper/drain.ts";
import { readEnded } from "./reaper/ended.ts";
import { expunge } from "./reaper/expunge.ts";
import { expiredCondition, lockRecords, unchangedCondition } from "./reaper/lock.ts";
import { type Pool, readPool, readTable, type Row } from "./reaper/reads.ts";
import { change, finish, newReport, outcome, type Report, strayChange } from "./reaper/report.ts";
import { reconcileRunners } from "./reaper/runners.ts";
import { type Terminated, terminateOwned } from "./reaper/terminate.ts";

export { type DesiredReaper, INPUTS, parseReaper } from "./reaper/inputs.ts";
export type { ReaperContext, ReaperOptions } from "./reaper/context.ts";
export type { ReaperCounts } from "./reaper/report.ts";

/** The reaper task: see the module documentation. */
export async function reapInstances(
  ctx: ReaperContext,
  options: ReaperOptions = {},
): Promise<TaskOutcome> {
  const { ddb, ec2 } = ctx.clients;
  const { table, reaper } = ctx.desired;
  const now = timestamp(ctx.now());

  const read = await readTable(ddb, table, options.pageSize, ctx.log);
  const pool = await readPool(ec2, table, reaper.legacyLaunchTemplateIds, read.records, ctx.log);
  ctx.log.info(
    `reaper: ${read.records.length} instance records, ${pool.alive.size} pool instances alive`,
  );
  const judged = {
    records: read.records,
    artifacts: read.artifacts,
    pool,
    // Whole seconds, as the lock's condition compares the threshold with the text of now.
    now: parseTimestamp(now)!,
    graceMs: reaper.orphanGraceMin * 60_000,
  };
  // Items without a record of instances EC2 reports terminated go now, not after the grace.
  const ended = await readEnded(ec2, unrecordedYoung(judged), table, pool.templateIds);
  const plan = classify({ ...judged, ended: new Set(ended.keys()) });
  const report = newReport(read, pool, plan);
  const drains = await drainPhase(ctx, read, pool, plan, now, report);
  if (ctx.dryRun) {
    return await listPlan(ctx, pool, recordIds(read.records), plan, drains, report, options);
  }
  const locked = await lockPhase(ctx, read.records, plan, drains, now, report);
  const terminated = await terminatePhase(ctx, pool, plan, locked, report);
  await expungePhase(ctx, pool, plan, locked, terminated, report, options);
  await runnerPhase(ctx, pool, recordIds(read.records), terminated, report, options);
  return finish(report);
}

/** Under dry-run: what would be terminated, drained, expunged and deleted; nothing is written. */
async function listPlan(
  ctx: ReaperContext,
  pool: Pool,
  records: ReadonlySet<string>,
  plan: Plan,
  drains: Drain[],
  report: Report,
  options: ReaperOptions,
): Promise<TaskOutcome> {
  const terminate = [...plan.expired, ...plan.unfinished, ...plan.orphans]
    .filter((id) => pool.alive.has(id));
  const expunge = [...plan.expired.filter((id) => !pool.alive.has(id)), ...plan.lost, ...plan.gone];
  report.changes.push(
    ...terminate.map((id) => change("terminate", id, plan.reasons)),
    ...drains.map((d) => change("drain", d.id, plan.reasons)),
    ...expunge.map((id) => change("expunge", id, plan.reasons)),
    ...plan.strays.map(strayChange),
  );
  report.counts.lost = plan.lost.length;
  const ending = new Set([...terminate, ...drains.map((d) => d.id)]);
  await reconcileRunners(ctx, pool, records, ending, report, options);
  return outcome(report.counts, report.changes, report.warnings, true, report.pool);
}

/**
 * Phase 3: expired records with DESIGN.md's condition; records of vanished instances, and idle
 * ones to drain, only if unchanged since the read (state, runId, threshold): a drained instance
 * provision claimed meanwhile keeps running. Drains go last, after the reaping. Returns the ids
 * this run locked.
 */
async function lockPhase(
  ctx: ReaperContext,
  records: Row[],
  plan: Plan,
  drains: Drain[],
  now: string,
  report: Report,
): Promise<Locked> {
  const { reaper } = ctx.desired;
  const rows = new Map(records.map((r) => [r.id, r]));
  const lock = await lockRecords(ctx.clients.ddb, ctx.desired.table, [
    ...plan.expired.map((id) => ({ row: rows.get(id)!, condition: expiredCondition(now) })),
    ...[...plan.lost, ...drains.map((d) => d.id)].map((id) => ({
      row: rows.get(id)!,
      condition: unchangedCondition(rows.get(id)!),
    })),
  ], {
    now,
    expiresAt: parseTimestamp(now)! / 1000 + reaper.terminatedRetentionHours * 3600,
    concurrency: reaper.concurrency,
    log: ctx.log,
    stop: deadline(ctx),
  });
  report.errors.push(...lock.errors);
  if (lock.skipped.length) report.skipped.push(`${lock.skipped.length} locks`);
  for (const id of lock.lostRace) {
    ctx.log.info(`reaper: ${id} changed since it was read (lost race), left alone`);
  }
  const won = new Set(lock.locked);
  const locked = {
    expired: plan.expired.filter((id) => won.has(id)),
    lost: plan.lost.filter((id) => won.has(id)),
    drained: drains.map((d) => d.id).filter((id) => won.has(id)),
  };
  report.counts.locked = locked.expired.length + locked.drained.length;
  report.counts.lostRace = lock.lostRace.length;
  report.counts.lost = locked.lost.length;
  return locked;
}

/** The ids the lock phase locked, by why. */
interface Locked {
  expired: string[];
  lost: string[];
  drained: string[];
}

/** Phase 4: only what is proven the pool's: locked (expired, drained), already terminated, or orphaned. */
async function terminatePhase(
  ctx: ReaperContext,
  pool: Pool,
  plan: Plan,
  locked: Locked,
  report: Report,
): Promise<Terminated> {
  const instances = [...locked.expired, ...plan.unfinished, ...plan.orphans, ...locked.drained]
    .flatMap((id) => pool.alive.get(id) ?? []);
  const result = await terminateOwned(ctx.clients.ec2, instances, ctx.log, deadline(ctx));
  report.counts.terminated = result.terminated.length;
  report.counts.notFound = result.notFound.length;
  report.counts.refused = result.refused.length;
  for (const [id, message] of result.refused) {
    report.warnings.push(
      `${id}: EC2 refused to terminate it (${message}); its record stays terminated`,
    );
  }
  report.errors.push(...result.errors);
  if (result.skipped.length) report.skipped.push(`${result.skipped.length} terminations`);
  const drained = new Set(locked.drained);
  report.counts.drained = [...result.terminated, ...result.notFound]
    .filter((id) => drained.has(id)).length;
  report.changes.push(
    ...result.terminated.map((id) =>
      change(drained.has(id) ? "drain" : "terminate", id, report.reasons)
    ),
  );
  return result;
}

/** Phase 5: what is certainly gone, record last; and the stray artifacts. */
async function expungePhase(
  ctx: ReaperContext,
  pool: Pool,
  plan: Plan,
  locked: Locked,
  terminated: Terminated,
  report: Report,
  options: ReaperOptions,
): Promise<void> {
  const goneLocked = [...locked.expired.filter((id) => !pool.alive.has(id)), ...locked.lost];
  const dead = [...terminated.terminated, ...terminated.notFound, ...goneLocked, ...plan.gone];
  const deleted = await expunge(ctx.clients.ddb, ctx.desired.table, dead, plan.strays, {
    concurrency: ctx.desired.reaper.concurrency,
    sleep: options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    log: ctx.log,
    stop: deadline(ctx),
  });
  report.counts.expunged = deleted.ids.length;
  report.counts.strays = deleted.strays.length;
  report.counts.itemsDeleted = deleted.items;
  report.errors.push(...deleted.errors);
  if (deleted.skipped) report.skipped.push(`${deleted.skipped} item deletions`);
  const expunged = new Set(deleted.ids);
  report.changes.push(
    ...terminated.notFound.filter((id) => expunged.has(id))
      .map((id) => change("expunge", id, report.reasons, "already gone from EC2")),
    ...[...goneLocked, ...plan.gone].filter((id) => expunged.has(id))
      .map((id) => change("expunge", id, report.reasons)),
    ...deleted.strays.map(strayChange),
  );
}

/** The ids of the instance records read. */
function recordIds(records: Row[]): Set<string> {
  return new Set(records.map((r) => r.id));
}

/** Phase 6, unless the deadline has passed. */
async function runnerPhase(
  ctx: ReaperContext,
  pool: Pool,
  records: ReadonlySet<string>,
  terminated: Terminated,
  report: Report,
  options: ReaperOptions,
): Promise<void> {
  const late = deadline(ctx);
  if (late()) {
    report.skipped.push("runner cleanup");
    return;
  }
  await reconcileRunners(ctx, pool, records, new Set(terminated.terminated), report, options);
  if (report.counts.runnersLeft && late()) {
    report.skipped.push(`${report.counts.runnersLeft} runner deletions`);
  }
}
