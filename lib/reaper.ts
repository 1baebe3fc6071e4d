/**
 * The garbage collector of the pool: instance lifecycle maintenance. {@link reapInstances} runs
 * these phases, in this order, each in its module under lib/reaper/:
 *
 * 1. **read** (reads.ts): every instance record, every heartbeat's and worker signal's key and
 *    age (between sweeps, the failed worker signals only); the pool's launch templates and, on a
 *    sweep, its live instances, each with its proof of ownership, and by id the instances records
 *    name that the pool listing does not hold; between sweeps (sweep.ts), by id only the instances
 *    it acts on, those it reaps by their ownership tags (proof.ts); the runner registrations.
 *    Reads that do not wait for each other run side by side.
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
 *
 *    Steps 3 to 5 run as one pipeline (pipeline.ts): each instance moves on as soon as its own
 *    step is done, in requests as full as the steps one after another would send; DynamoDB
 *    writes go at a pace per partition key and back off when throttled (pace.ts).
 * 6. **runners** (runners.ts): deletes the registrations provably the pool's (its label, or an
 *    instance it knows) whose instance is provably dead (terminated by this run, or reported
 *    terminated by EC2), busy ones excepted, within a time budget.
 *
 * The report (report.ts) collects counts, changes, warnings and errors; a failed operation never
 * stops the others, and the task fails at the end when one did. Once the run's deadline has
 * passed no new unit of work starts, and what was left is reported.
 *
 * Writes: UpdateItem and BatchWriteItem on the table, TerminateInstances, runner deletions. Under
 * dry-run it reads, and lists what it would lock, terminate, drain, expunge and delete; a table
 * that does not exist yet (a new account) holds nothing to reap then, and is no failure.
 *
 * @module
 */
import { timestamp } from "./contract.ts";
import type { Drain } from "./rollout.ts";
import { describeError, type TaskOutcome } from "./task.ts";
import { classify, parseTimestamp, type Plan, unrecordedYoung } from "./reaper/classify.ts";
import { deadline, type ReaperContext, type ReaperOptions } from "./reaper/context.ts";
import { drainPhase } from "./reaper/drain.ts";
import { readEnded } from "./reaper/ended.ts";
import type { Expunged } from "./reaper/expunge.ts";
import { expiredCondition, type LockResult, unchangedCondition } from "./reaper/lock.ts";
import { runPipeline } from "./reaper/pipeline.ts";
import {
  mergePools,
  type Pool,
  readArtifacts,
  readPool,
  readTableIfAny,
  readTargets,
  readTemplateDefault,
  readTemplates,
  type Row,
} from "./reaper/reads.ts";
import { change, finish, newReport, outcome, type Report, strayChange } from "./reaper/report.ts";
import { type GithubRunner, listRunners, reconcileRunners } from "./reaper/runners.ts";
import type { Terminated } from "./reaper/terminate.ts";
import { readProofs } from "./reaper/proof.ts";
import {
  readSweep,
  recordTargets,
  sweepDue,
  sweepIntervalMin,
  targetIds,
  writeSweep,
} from "./reaper/sweep.ts";

export { type DesiredReaper, INPUTS, parseReaper } from "./reaper/inputs.ts";
export type { ReaperContext, ReaperOptions } from "./reaper/context.ts";
export type { ReaperCounts } from "./reaper/report.ts";

/** The reaper task: see the module documentation. */
export async function reapInstances(
  ctx: ReaperContext,
  options: ReaperOptions = {},
): Promise<TaskOutcome> {
  const now = timestamp(ctx.now());
  const { read, pool, template, runners, sweep } = await readPhase(ctx, options);
  ctx.log.info(
    `reaper: ${read.records.length} instance records, ${pool.alive.size} pool instances alive`,
  );
  const judged = {
    records: read.records,
    artifacts: read.artifacts,
    pool,
    // Whole seconds, as the lock's condition compares the threshold with the text of now.
    now: parseTimestamp(now)!,
    graceMs: ctx.desired.reaper.orphanGraceMin * 60_000,
  };
  // Items without a record of instances EC2 reports terminated go now, not after the grace.
  // So do the records of young instances EC2 ended (a reclaimed spot instance): every record's
  // instance no listing held was described by id already, which `pool.ended` keeps.
  const ended = await readEnded(
    ctx.clients.ec2,
    unrecordedYoung(judged),
    ctx.desired.table,
    pool.templateIds,
  );
  const plan = classify({ ...judged, ended: new Set([...pool.ended, ...ended.keys()]) });
  const records = new Set(read.records.map((r) => r.id));
  const report = newReport(read, pool, plan);
  const drains = await drainPhase(ctx, read, pool, plan, now, report, template);
  if (ctx.dryRun) {
    return await listPlan(ctx, pool, plan, drains, report, { ...options, records }, runners);
  }
  const terminated = await reapPhase(ctx, read.records, pool, plan, drains, now, report, options);
  await runnerPhase(ctx, pool, terminated, report, { ...options, records }, runners);
  if (sweep.due !== undefined && ctx.desired.reaper.sweep === "auto") {
    await rememberSweep(ctx, pool, report, sweep.version);
  }
  return finish(report);
}

/** After a sweep: what it saw, for the targeted runs until the next one (one PutItem). */
async function rememberSweep(
  ctx: ReaperContext,
  pool: Pool,
  report: Report,
  templateVersion: number,
): Promise<void> {
  try {
    await writeSweep(ctx.clients.ddb, ctx.desired.table, {
      at: timestamp(ctx.now()),
      alive: pool.alive.size,
      templateVersion,
      outdatedIdle: report.counts.outdated + report.counts.outdatedLeft,
    }, ctx.now());
  } catch (error) {
    // The next run sweeps again: nothing lost but its time.
    report.warnings.push(`could not remember this sweep: ${describeError(error)}`);
  }
}

/**
 * Phase 1, side by side: the table's three partitions; the pool's templates, then its instances
 * (by tag at once, by template once the templates are known, by id once the records are); the
 * template's default version; the runner registrations (when GitHub is configured). The two
 * last are awaited by the phases that use them.
 */
async function readPhase(ctx: ReaperContext, options: ReaperOptions) {
  const { ddb, ec2, github } = ctx.clients;
  const { table, reaper, launchTemplate } = ctx.desired;
  const scope = ctx.desired.github.scope;
  const runners = github && scope ? listRunners(github, scope) : undefined;
  // The template as the launch-template task leaves it (it may have just made a new default
  // version); the table is read meanwhile.
  const templates = (ctx.settled?.("launch-template") ?? Promise.resolve())
    .then(() => readTemplates(ec2, table, reaper.legacyLaunchTemplateIds));
  const template = templates.then((t) => readTemplateDefault(ec2, t, launchTemplate.name));
  // Awaited later (or never, when the run fails first): no unhandled rejection meanwhile.
  for (const later of [runners, template]) later?.catch(() => {});
  // Under dry-run on a new account the table does not exist yet: then nothing is in it. The
  // instance records are heard as soon as they are read: a targeted run describes the instances
  // they name while the heartbeats and worker signals are still being read.
  // Between sweeps only the failed worker signals matter (lib/reaper/reads.ts, `Signals`): with
  // `--sweep auto` the others are read once a sweep turns out to be due.
  const records = Promise.withResolvers<Row[]>();
  const signals = reaper.sweep === "always" ? "all" : "failed";
  const reading = readTableIfAny(ddb, table, {
    pageSize: options.pageSize,
    log: ctx.log,
    dryRun: ctx.dryRun,
    onRecords: records.resolve,
    signals,
  });
  reading.catch(records.reject);
  // `--sweep always` needs no memory of the last sweep: none is read, none written.
  const remembered = reaper.sweep === "always" ? undefined : readSweep(ddb, table).catch(
    (error) => {
      if (ctx.dryRun && (error as Error).name === "ResourceNotFoundException") return undefined;
      throw error;
    },
  );
  const [rows, memory, known, version] = await Promise.all([
    records.promise,
    remembered,
    templates,
    template.then((t) => t?.version ?? 0, () => 0),
  ]);
  const now = ctx.now();
  const due = sweepDue({
    mode: reaper.sweep,
    memory,
    now,
    intervalMin: sweepIntervalMin(reaper.orphanGraceMin),
    templateVersion: version,
    liveRecords: rows.filter((r) => r.state !== "terminated").length,
  });
  if (due !== undefined) {
    ctx.log.info(`reaper: sweeping the whole pool (${due})`);
    // The worker signals a targeted run leaves unread, once the table is known to exist.
    const [read, pool] = await Promise.all([
      reading.then(async (read) => {
        if (signals === "all" || read.missing) return read;
        const heartbeats = read.artifacts.filter((a) => a.entity === "HEARTBEAT");
        const every = await readArtifacts(ddb, table, "WS", options.pageSize);
        return { ...read, artifacts: [...heartbeats, ...every] };
      }),
      readPool(ec2, table, known, rows, ctx.log),
    ]);
    return { read, pool, template, runners, sweep: { due, memory, version } };
  }
  const rolloutInProgress = (memory?.outdatedIdle ?? 0) > 0;
  // What the records alone name: the ones to reap need their instances' proofs only
  // (lib/reaper/proof.ts); idle ones during a rollout are described in full (a drain reads the
  // image, launch time and tags).
  const { reap, idle } = recordTargets({ records: rows, now: now.getTime(), rolloutInProgress });
  const proven = readProofs(ec2, table, known, reap);
  const described = readTargets(ec2, table, known, idle);
  for (const later of [proven, described]) later.catch(() => {});
  const read = await reading;
  const seen = new Set([...reap, ...idle]);
  const ids = targetIds({
    records: read.records,
    artifacts: read.artifacts,
    now: now.getTime(),
    rolloutInProgress,
  }).filter((id) => !seen.has(id));
  ctx.log.info(
    `reaper: targeted run, ${seen.size + ids.length} instances looked up by id (last sweep ${
      memory!.at
    })`,
  );
  const pool = mergePools(
    await proven,
    await described,
    await readTargets(ec2, table, known, ids),
  );
  return { read, pool, template, runners, sweep: { due, memory, version } };
}

/** Under dry-run: what would be terminated, drained, expunged and deleted; nothing is written. */
async function listPlan(
  ctx: ReaperContext,
  pool: Pool,
  plan: Plan,
  drains: Drain[],
  report: Report,
  options: ReaperOptions & { records: ReadonlySet<string> },
  listed?: Promise<GithubRunner[]>,
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
  await reconcileRunners(ctx, pool, ending, report, { ...options, listed });
  const planned = outcome(report.counts, report.changes, report.warnings, true, report.pool);
  if (!report.tableMissing) return planned;
  const missing = `table ${ctx.desired.table} does not exist yet (the table task would create it)`;
  return { ...planned, summary: `${missing}: ${planned.summary}` };
}

/**
 * Phases 3 to 5, as one pipeline (lib/reaper/pipeline.ts): expired records are locked with
 * DESIGN.md's condition; records of vanished instances, and idle ones to drain, only if unchanged
 * since the read (state, runId, threshold): a drained instance provision claimed meanwhile keeps
 * running. Drains go last, after the reaping. Only what is proven the pool's is terminated:
 * locked (expired, drained), already terminated, or orphaned; what is certainly gone is expunged,
 * record last, with the stray artifacts. Returns what EC2 terminated.
 */
async function reapPhase(
  ctx: ReaperContext,
  records: Row[],
  pool: Pool,
  plan: Plan,
  drains: Drain[],
  now: string,
  report: Report,
  options: ReaperOptions,
): Promise<Terminated> {
  const { reaper } = ctx.desired;
  const rows = new Map(records.map((r) => [r.id, r]));
  const drained = drains.map((d) => d.id);
  const { lock, terminated, expunged } = await runPipeline({
    locks: [
      ...plan.expired.map((id) => ({ row: rows.get(id)!, condition: expiredCondition(now) })),
      ...[...plan.lost, ...drained].map((id) => ({
        row: rows.get(id)!,
        condition: unchangedCondition(rows.get(id)!),
      })),
    ],
    alive: pool.alive,
    unlocked: [...plan.unfinished, ...plan.orphans].flatMap((id) => pool.alive.get(id) ?? []),
    gone: plan.gone,
    strays: plan.strays,
  }, {
    ddb: ctx.clients.ddb,
    ec2: ctx.clients.ec2,
    table: ctx.desired.table,
    now,
    expiresAt: parseTimestamp(now)! / 1000 + reaper.terminatedRetentionHours * 3600,
    concurrency: reaper.concurrency,
    writeRate: reaper.writeRate,
    log: ctx.log,
    stop: deadline(ctx),
    sleep: options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
  });
  const won = new Set(lock.locked);
  const locked = {
    expired: plan.expired.filter((id) => won.has(id)),
    lost: plan.lost.filter((id) => won.has(id)),
    drained: drained.filter((id) => won.has(id)),
  };
  reportLocks(ctx, lock, locked, report);
  // In the order the phases one after another would have taken, whatever finished first.
  const order = [...locked.expired, ...plan.unfinished, ...plan.orphans, ...locked.drained];
  const done = inOrder(terminated, order);
  reportTerminations(done, new Set(locked.drained), report);
  const goneLocked = [...locked.expired.filter((id) => !pool.alive.has(id)), ...locked.lost];
  reportExpunged(expunged, done.notFound, [...goneLocked, ...plan.gone], report);
  return done;
}

/** The ids the lock step locked, by why. */
interface Locked {
  expired: string[];
  lost: string[];
  drained: string[];
}

function reportLocks(ctx: ReaperContext, lock: LockResult, locked: Locked, report: Report): void {
  report.errors.push(...lock.errors);
  if (lock.skipped.length) report.skipped.push(`${lock.skipped.length} locks`);
  for (const id of lock.lostRace) {
    ctx.log.info(`reaper: ${id} changed since it was read (lost race), left alone`);
  }
  report.counts.locked = locked.expired.length + locked.drained.length;
  report.counts.lostRace = lock.lostRace.length;
  report.counts.lost = locked.lost.length;
}

/** The terminations with their ids sorted as in `order` (the proof's groups kept apart). */
function inOrder(result: Terminated, order: string[]): Terminated {
  const rank = new Map(order.map((id, i) => [id, i]));
  const sort = (ids: string[]) =>
    [...ids].sort((a, b) => (rank.get(a) ?? Infinity) - (rank.get(b) ?? Infinity));
  const refused = new Map(result.refused);
  return {
    terminated: sort(result.terminated),
    notFound: sort(result.notFound),
    refused: sort([...refused.keys()]).map((id) => [id, refused.get(id)!]),
    skipped: sort(result.skipped),
    errors: result.errors,
  };
}

function reportTerminations(result: Terminated, drained: Set<string>, report: Report): void {
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
  report.counts.drained = [...result.terminated, ...result.notFound]
    .filter((id) => drained.has(id)).length;
  report.changes.push(
    ...result.terminated.map((id) =>
      change(drained.has(id) ? "drain" : "terminate", id, report.reasons)
    ),
  );
}

/** What was expunged: instances EC2 no longer knew, instances gone before, stray artifacts. */
function reportExpunged(
  deleted: Expunged,
  notFound: string[],
  gone: string[],
  report: Report,
): void {
  report.counts.expunged = deleted.ids.length;
  report.counts.strays = deleted.strays.length;
  report.counts.itemsDeleted = deleted.items;
  report.errors.push(...deleted.errors);
  if (deleted.skipped) report.skipped.push(`${deleted.skipped} item deletions`);
  const expunged = new Set(deleted.ids);
  report.changes.push(
    ...notFound.filter((id) => expunged.has(id))
      .map((id) => change("expunge", id, report.reasons, "already gone from EC2")),
    ...gone.filter((id) => expunged.has(id)).map((id) => change("expunge", id, report.reasons)),
    ...deleted.strays.map(strayChange),
  );
}

/** Phase 6, unless the deadline has passed. */
async function runnerPhase(
  ctx: ReaperContext,
  pool: Pool,
  terminated: Terminated,
  report: Report,
  options: ReaperOptions & { records: ReadonlySet<string> },
  listed?: Promise<GithubRunner[]>,
): Promise<void> {
  const late = deadline(ctx);
  if (late()) {
    report.skipped.push("runner cleanup");
    return;
  }
  await reconcileRunners(ctx, pool, new Set(terminated.terminated), report, {
    ...options,
    listed,
  });
  if (report.counts.runnersLeft && late()) {
    report.skipped.push(`${report.counts.runnersLeft} runner deletions`);
  }
}
