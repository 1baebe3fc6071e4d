/**
 * The garbage collector of the pool: instance lifecycle maintenance. `reapInstances` runs these
 * phases, in this order, each a function below:
 *
 * 1. **read** ({@link readTable}, {@link readPool}): every instance record (`PK = TYPE#INSTANCE`,
 *    every page) and the keys and `updatedAt` of every heartbeat and worker signal; the pool's
 *    launch templates (tagged {@link OWNER_TAG} = table, plus the operator's legacy template ids)
 *    and its live instances, each with its proof of ownership (see {@link ownership}); then, by
 *    id, the instances that records name but the pool listing does not hold.
 * 2. **classify** ({@link classify}): pure; decides from what was read, never from a record
 *    alone, what to lock, terminate and expunge, and what to report and leave alone: records of
 *    instances alive outside the pool, thresholds that are not timestamps, unknown states.
 *    **Rollout and health** ({@link drainPhase}: {@link planRollout} in lib/rollout.ts, pure,
 *    with the template's default version read by {@link readTemplateDefault}): idle pool
 *    instances launched from another template version (a few per class and run), or unable to
 *    serve (a `*_FAILED` worker signal, a stale or missing heartbeat), are drained: locked only if
 *    still idle and unchanged since the read, then terminated and expunged like expired ones. The
 *    pool view per resource class goes in `found.pool`.
 * 3. **lock** ({@link lockRecords}): DESIGN.md's conditional update to `terminated` (with
 *    `expiresAt` as a TTL safety net), under a condition the caller gives; a failed condition
 *    means another writer won, unless the item it returns is this run's own write (a lock whose
 *    reply was lost and which the SDK retried).
 * 4. **terminate** ({@link terminateOwned}): TerminateInstances, in batches of 1,000, of
 *    instances proven to be the pool's only: locked ones, ones whose record is already
 *    `terminated` (a crash between phases), orphans.
 * 5. **expunge** ({@link expunge}): per instance known to be gone, its heartbeat and worker
 *    signal first, its record last (BatchWriteItem, 25 per request), so no crash or failed batch
 *    leaves an artifact no run looks for; and the sweep of heartbeats and worker signals that
 *    have no record and are older than the grace period.
 * 6. **runners** ({@link reconcileRunners}): lists the pool's GitHub runner registrations
 *    (`<instance id>-<n>`) and deletes those of instances not alive (offline ones, and the ones of
 *    instances this run terminated), busy ones excepted, within a time budget so a backlog drains
 *    over runs.
 *
 * Writes: UpdateItem and BatchWriteItem on the table, TerminateInstances, runner deletions. Under
 * dry-run it reads, and lists what it would lock, terminate, drain, expunge and delete.
 *
 * @module
 */
import {
  DescribeInstancesCommand,
  DescribeLaunchTemplatesCommand,
  DescribeLaunchTemplateVersionsCommand,
  type Filter,
  type Instance,
  TerminateInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import type { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import {
  BatchWriteCommand,
  type DynamoDBDocumentClient,
  QueryCommand,
  UpdateCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { unmarshall } from "npm:@aws-sdk/util-dynamodb@3.996.9";
import { type Entity, idOf, OWNER_TAG, pk, sk, timestamp } from "./contract.ts";
import { checkIds, type InputSpec, type Reader } from "./inputs.ts";
import {
  type Drain,
  type Heartbeat,
  parseMaxPerRun,
  planRollout,
  type PoolInstance,
  type PoolView,
  type RecordRow,
  type RolloutInputs,
  TEMPLATE_ID_TAG,
  type TemplateDefault,
  type WorkerSignal,
} from "./rollout.ts";
import {
  type Change,
  describeError,
  type Logger,
  type TaskContext,
  type TaskOutcome,
} from "./task.ts";

/** `--rollout-max-per-run`'s default: a quarter of a class's serving idle instances per run. */
const ROLLOUT_DEFAULT = "25%";

/** The reaper's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "orphan-grace-min",
    env: ["REFRESH_ORPHAN_GRACE_MIN"],
    kind: "int",
    default: "15",
    help:
      "minutes a pool instance without a record, a record of an unlisted instance, or a heartbeat or worker signal without a record may exist before it is reaped",
  },
  {
    name: "reap-concurrency",
    env: ["REFRESH_REAP_CONCURRENCY"],
    kind: "int",
    default: "16",
    help: "conditional updates in flight at once while locking expired instances",
  },
  {
    name: "terminated-retention-hours",
    env: ["REFRESH_TERMINATED_RETENTION_HOURS"],
    kind: "int",
    default: "24",
    help: "hours a terminated instance record is kept (DynamoDB TTL) before it expires",
  },
  {
    name: "legacy-launch-template-ids",
    env: ["REFRESH_LEGACY_LAUNCH_TEMPLATE_IDS"],
    kind: "list",
    help:
      "launch template ids (lt-…) whose instances count as the pool's although untagged (migration)",
  },
  {
    name: "runner-cleanup-sec",
    env: ["REFRESH_RUNNER_CLEANUP_SEC"],
    kind: "int",
    default: "60",
    help: "seconds a run may spend deleting runner registrations of gone instances",
  },
  {
    name: "rollout-max-per-run",
    env: ["REFRESH_ROLLOUT_MAX_PER_RUN"],
    kind: "string",
    default: ROLLOUT_DEFAULT,
    help:
      "idle instances of an older template version drained per class and run: a number, or a percentage (0: off)",
  },
  {
    name: "heartbeat-stale-sec",
    env: ["REFRESH_HEARTBEAT_STALE_SEC"],
    kind: "int",
    default: "300",
    help:
      "seconds without a heartbeat after which an idle instance is drained as unhealthy (0: heartbeats not judged)",
  },
  {
    name: "boot-grace-min",
    env: ["REFRESH_BOOT_GRACE_MIN"],
    kind: "int",
    default: "15",
    help: "minutes after launch an idle instance may go without any heartbeat (still booting)",
  },
];

/** The reaper's section of the desired state. */
export interface DesiredReaper {
  orphanGraceMin: number;
  concurrency: number;
  terminatedRetentionHours: number;
  /** Templates whose instances count as the pool's without the ownership tag (migration). */
  legacyLaunchTemplateIds: string[];
  /** Time budget of the runner phase, in seconds. */
  runnerCleanupSec: number;
  /** Rollout and health draining (lib/rollout.ts). */
  rollout: RolloutInputs;
}

/** A launch template id, as EC2 writes them. */
const LAUNCH_TEMPLATE_ID = /^lt-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;

/** Reads the reaper's inputs, recording problems on the reader. */
export function parseReaper(r: Reader): DesiredReaper {
  const legacy = r.list("legacy-launch-template-ids") ?? [];
  return {
    orphanGraceMin: r.int("orphan-grace-min", 1)!,
    concurrency: r.int("reap-concurrency", 1, 256)!,
    terminatedRetentionHours: r.int("terminated-retention-hours", 1, 24 * 365)!,
    legacyLaunchTemplateIds: checkIds(
      "legacy-launch-template-ids",
      legacy,
      LAUNCH_TEMPLATE_ID,
      "a launch template id (lt- and 8 or 17 hexadecimal digits)",
      r.problems,
    ) ?? [],
    runnerCleanupSec: r.int("runner-cleanup-sec", 0, 3600)!,
    rollout: {
      maxPerRun: maxPerRun(r),
      heartbeatStaleSec: r.int("heartbeat-stale-sec", 0, 86_400)!,
      bootGraceMin: r.int("boot-grace-min", 1, 1440)!,
    },
  };
}

/** `--rollout-max-per-run`: a number (also a JSON number in the config file) or a percentage. */
function maxPerRun(r: Reader): RolloutInputs["maxPerRun"] {
  const raw = r.raw["rollout-max-per-run"] ?? ROLLOUT_DEFAULT;
  const parsed = typeof raw === "string" || typeof raw === "number"
    ? parseMaxPerRun(String(raw))
    : `expected a whole number or a percentage, got ${JSON.stringify(raw)}`;
  if (typeof parsed === "string") {
    r.problems.push(`rollout-max-per-run: ${parsed}`);
    return { count: 0 };
  }
  return parsed;
}

/** States a record can expire from. */
const LIVE_STATES = new Set(["created", "running", "idle", "claimed"]);
/** EC2 states of an instance that still exists (and costs money). */
const ALIVE_EC2 = ["pending", "running", "stopping", "stopped"];
/** TerminateInstances takes at most 1,000 ids. */
const TERMINATE_BATCH = 1000;
/**
 * DescribeInstances takes at most 200 filter values in all, over every filter of a call
 * (`FilterLimitExceeded`); moto does not check, so the tests check the requests themselves.
 */
export const FILTER_VALUES = 200;
/** BatchWriteItem takes at most 25 requests. */
const WRITE_BATCH = 25;
const WRITE_ATTEMPTS = 8;
/** Log a progress line every this many items of a long phase. */
const PROGRESS_EVERY = 500;
/**
 * The tag EC2 itself puts on every instance launched from a launch template (RunInstances,
 * CreateFleet), with `aws:ec2launchtemplate:version`. Keys starting with `aws:` are reserved: no
 * user or runner can create, change or delete them, so this one proves which template an
 * instance came from (sources in lib/rollout.ts).
 */
const TEMPLATE_TAG = TEMPLATE_ID_TAG;

/**
 * A strict ISO-8601 UTC timestamp, as DESIGN.md writes them (`2025-04-24T18:31:04Z`); fractional
 * seconds (`.123Z`, as JavaScript's toISOString writes) are tolerated. No offset other than `Z`,
 * no date alone, no epoch numbers.
 */
const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?Z$/;

/** The time a strict UTC timestamp names, or undefined for anything else (a real calendar time). */
export function parseTimestamp(value: unknown): number | undefined {
  if (typeof value !== "string") return undefined;
  const m = TIMESTAMP.exec(value);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const date = new Date(ms);
  // Date.UTC rolls 2025-02-30 over to March: such a text is not a time.
  const real = date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 &&
    date.getUTCDate() === day && date.getUTCHours() === hour && date.getUTCMinutes() === minute &&
    date.getUTCSeconds() === second;
  return real ? ms + Number(`0${m[7] ?? ""}`) * 1000 : undefined;
}

export interface ReaperOptions {
  /** Query page size (`Limit`); by default DynamoDB's 1 MB pages. */
  pageSize?: number;
  /** Waits between BatchWriteItem retries; tests pass their own. */
  sleep?: (ms: number) => Promise<void>;
  /** Time budget of the runner phase in milliseconds; by default `--runner-cleanup-sec`. */
  runnerBudgetMs?: number;
  /** Monotonic clock in milliseconds for the runner budget; tests pass their own. */
  clock?: () => number;
}

/** What the reaper counted, by category; `found` of its outcome. */
export interface ReaperCounts {
  records: number;
  /** Items DynamoDB read (ScannedCount of every page of instance records). */
  itemsRead: number;
  pages: number;
  /** Launch templates whose instances count as the pool's. */
  templates: number;
  /** Pool instances alive in EC2 (proven by tag or template). */
  alive: number;
  expired: number;
  locked: number;
  lostRace: number;
  /** Records already terminated whose instance still ran. */
  unfinished: number;
  orphans: number;
  /** Live records whose instance is gone from EC2, marked terminated and deleted. */
  lost: number;
  /** Records naming an instance alive in EC2 but not proven the pool's: reported, untouched. */
  foreign: number;
  /** Records with an unknown state, or a threshold that is not a timestamp: reported, untouched. */
  invalid: number;
  /** Instances EC2 accepted to terminate. */
  terminated: number;
  /** Ids EC2 did not know (already gone). */
  notFound: number;
  /** Instances EC2 refused to terminate (termination protection). */
  refused: number;
  /** Instances whose heartbeat, worker signal and record were deleted. */
  expunged: number;
  /** Heartbeats and worker signals without a record, older than the grace period, deleted. */
  strays: number;
  itemsDeleted: number;
  runnersDeleted: number;
  runnersBusy: number;
  /** Deletable registrations left for the next run when the runner phase ran out of time. */
  runnersLeft: number;
  /** Idle instances of another template version planned for draining this run. */
  outdated: number;
  /** Outdated idle instances the per-run limit leaves for later runs. */
  outdatedLeft: number;
  /** Idle instances that cannot serve (failed signal, stale or missing heartbeat) to drain. */
  unhealthy: number;
  /** Of those planned, the ones locked and terminated (or already gone) this run. */
  drained: number;
}

/**
 * An instance record as the reaper reads it: any runner can write the table, so nothing but the
 * id is trusted to have the contract's types (`InstanceRecord` in contract.ts).
 */
export interface Row {
  id: string;
  state: unknown;
  threshold?: unknown;
  runId?: unknown;
  updatedAt?: unknown;
  resourceClass?: unknown;
}

/** A heartbeat or worker signal item's key and age (and a worker signal's `value`). */
export interface ArtifactKey {
  entity: "HEARTBEAT" | "WS";
  id: string;
  updatedAt: unknown;
  /** A worker signal's `{ state, runId }`, as stored. */
  value?: unknown;
}

/** How an instance is proven to belong to the pool. */
export type Proof = "tag" | "template";

/** An instance alive in EC2, as the reaper sees it. */
export interface LiveInstance {
  id: string;
  /** ISO-8601 launch time. */
  launched?: string;
  /** Its proof of belonging to the pool; undefined: not the pool's. */
  proof?: Proof;
  imageId?: string;
  /** Its tags (EC2's launch template tags tell its template version). */
  tags?: Record<string, string>;
}

/** What EC2 says about the pool. */
export interface Pool {
  /** Launch template ids whose instances count as the pool's. */
  templateIds: Set<string>;
  /** The pool's own templates (tagged for this table), by name: their ids. */
  templatesByName: Map<string, string>;
  /** Instances alive and proven the pool's. */
  alive: Map<string, LiveInstance>;
  /** Instances alive in EC2 that a record names but that are not proven the pool's. */
  foreign: Map<string, LiveInstance>;
}

/** The reaper task: see the module documentation. */
export async function reapInstances(
  ctx: TaskContext,
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
  const plan = classify({
    records: read.records,
    artifacts: read.artifacts,
    pool,
    // Whole seconds, as the lock's condition compares the threshold with the text of now.
    now: parseTimestamp(now)!,
    graceMs: reaper.orphanGraceMin * 60_000,
  });
  const report = newReport(read, pool, plan);
  const drains = await drainPhase(ctx, read, pool, plan, now, report);
  if (ctx.dryRun) return await listPlan(ctx, pool, plan, drains, report, options);
  const locked = await lockPhase(ctx, read.records, plan, drains, now, report);
  const terminated = await terminatePhase(ctx, pool, plan, locked, report);
  await expungePhase(ctx, pool, plan, locked, terminated, report, options);
  await runnerPhase(ctx, pool, terminated, report, options);
  return finish(report);
}

/** What a run has found, done, warned about and failed at so far. */
export interface Report {
  counts: ReaperCounts;
  changes: Change[];
  warnings: string[];
  errors: string[];
  /** Work not started because the run's deadline had passed. */
  skipped: string[];
  reasons: Map<string, string>;
  /** The pool view per resource class (`found.pool`). */
  pool: PoolView;
}

function newReport(read: TableRead, pool: Pool, plan: Plan): Report {
  return {
    counts: countsOf(read, pool, plan),
    changes: [],
    warnings: [...plan.warnings],
    errors: [],
    skipped: [],
    reasons: plan.reasons,
    pool: { template: null, classes: {} },
  };
}

/**
 * Phase 2b, rollout and health: reads the template's default version (a failure skips the rollout
 * with a warning, never the reaping), plans which idle instances to drain and why
 * (lib/rollout.ts), and puts the pool view in the report. `now` is the run's start.
 */
async function drainPhase(
  ctx: TaskContext,
  read: TableRead,
  pool: Pool,
  plan: Plan,
  now: string,
  report: Report,
): Promise<Drain[]> {
  const name = ctx.desired.launchTemplate.name;
  const template = await readTemplateDefault(ctx.clients.ec2, pool, name).catch((error) => {
    report.warnings.push(
      `template versions not judged (no rollout this run): reading the default version of ${name} failed: ${
        describeError(error)
      }`,
    );
    return null;
  });
  // Heartbeats are judged against the run's start, which is before they were read: a slow read
  // (minutes over a big pool) must never age them.
  const reading = rolloutReading(read, pool, plan, template, new Date(parseTimestamp(now)!));
  const rollout = planRollout(reading, ctx.desired.reaper.rollout);
  report.pool = rollout.view;
  report.warnings.push(...rollout.warnings);
  for (const d of rollout.drains) report.reasons.set(d.id, drainReason(d));
  const counts = report.counts;
  counts.outdated = rollout.drains.filter((d) => d.kind === "outdated").length;
  counts.unhealthy = rollout.drains.length - counts.outdated;
  counts.outdatedLeft = Object.values(rollout.view.classes).reduce((n, c) => n + c.deferred, 0);
  return rollout.drains;
}

/** Why an instance is drained, as the report says it. */
function drainReason(drain: Drain): string {
  const why = drain.kind === "outdated" ? "rollout" : "unhealthy";
  return `${why}: idle ${drain.resourceClass} instance, ${drain.detail}`;
}

/**
 * What the rollout planner reads, from what the reaper read: records (those the reaper already
 * takes this run, or reports as invalid or foreign, are never drained), the pool's instances
 * with their image and tags, heartbeats and worker signals.
 */
export function rolloutReading(
  read: Pick<TableRead, "records" | "artifacts">,
  pool: Pick<Pool, "alive">,
  plan: Pick<Plan, "expired" | "lost" | "invalid" | "foreign">,
  template: TemplateDefault | null,
  now: Date,
) {
  const text = (value: unknown) => typeof value === "string" ? value : undefined;
  const records: RecordRow[] = read.records.flatMap((r) =>
    typeof r.state === "string"
      ? [{
        id: r.id,
        state: r.state,
        threshold: text(r.threshold),
        runId: text(r.runId),
        resourceClass: text(r.resourceClass),
      }]
      : []
  );
  const instances = new Map<string, PoolInstance>();
  for (const i of pool.alive.values()) {
    instances.set(i.id, {
      id: i.id,
      launchTime: i.launched,
      imageId: i.imageId,
      tags: i.tags ?? {},
    });
  }
  const heartbeats = new Map<string, Heartbeat>();
  const signals = new Map<string, WorkerSignal>();
  for (const a of read.artifacts) {
    if (a.entity === "HEARTBEAT") {
      heartbeats.set(a.id, { id: a.id, updatedAt: text(a.updatedAt) });
      continue;
    }
    const value = (typeof a.value === "object" && a.value !== null ? a.value : {}) as Record<
      string,
      unknown
    >;
    signals.set(a.id, {
      id: a.id,
      state: text(value.state),
      runId: text(value.runId),
      updatedAt: text(a.updatedAt),
    });
  }
  const taken = new Set([...plan.expired, ...plan.lost, ...plan.invalid, ...plan.foreign]);
  return { records, instances, heartbeats, signals, template, taken, now };
}

/** The run's deadline: no new unit of work starts after it; what is left is reported. */
function deadline(ctx: TaskContext): () => boolean {
  return () => ctx.budget.expired();
}

/** Under dry-run: what would be terminated, drained, expunged and deleted; nothing is written. */
async function listPlan(
  ctx: TaskContext,
  pool: Pool,
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
  await reconcileRunners(ctx, pool, ending, report, options);
  return outcome(report.counts, report.changes, report.warnings, true, report.pool);
}

/**
 * Phase 3: expired records with DESIGN.md's condition; records of vanished instances, and idle
 * ones to drain, only if unchanged since the read (state, runId, threshold): a drained instance
 * provision claimed meanwhile keeps running. Drains go last, after the reaping. Returns the ids
 * this run locked.
 */
async function lockPhase(
  ctx: TaskContext,
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
  ctx: TaskContext,
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
  ctx: TaskContext,
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

/** Phase 6, unless the deadline has passed. */
async function runnerPhase(
  ctx: TaskContext,
  pool: Pool,
  terminated: Terminated,
  report: Report,
  options: ReaperOptions,
): Promise<void> {
  const late = deadline(ctx);
  if (late()) {
    report.skipped.push("runner cleanup");
    return;
  }
  await reconcileRunners(ctx, pool, new Set(terminated.terminated), report, options);
  if (report.counts.runnersLeft && late()) {
    report.skipped.push(`${report.counts.runnersLeft} runner deletions`);
  }
}

/** The outcome; the task fails when an operation failed or work was left at the deadline. */
function finish(report: Report): TaskOutcome {
  const errors = [...report.errors];
  if (report.skipped.length) {
    errors.unshift(
      `the run's deadline passed: ${report.skipped.join(", ")} not started; the next run does them`,
    );
  }
  const done = outcome(report.counts, report.changes, report.warnings, false, report.pool);
  if (errors.length) {
    const more = errors.length > 3 ? ` (and ${errors.length - 3} more)` : "";
    throw new Error(
      `${done.summary}; ${errors.length} operations failed, retried next run: ${
        errors.slice(0, 3).join("; ")
      }${more}`,
    );
  }
  return done;
}

function change(action: string, id: string, reasons: Map<string, string>, extra?: string): Change {
  const detail = [reasons.get(id), extra].filter(Boolean).join("; ");
  return { action, target: `instance ${id}`, detail };
}

function strayChange(key: ArtifactKey): Change {
  return {
    action: "delete",
    target: `${key.entity === "WS" ? "worker signal" : "heartbeat"} ${key.id}`,
    detail: `no instance record, last written ${key.updatedAt}`,
  };
}

function countsOf(read: TableRead, pool: Pool, plan: Plan): ReaperCounts {
  return {
    records: read.records.length,
    itemsRead: read.scanned,
    pages: read.pages,
    templates: pool.templateIds.size,
    alive: pool.alive.size,
    expired: plan.expired.length,
    locked: 0,
    lostRace: 0,
    unfinished: plan.unfinished.length,
    orphans: plan.orphans.length,
    lost: 0,
    foreign: plan.foreign.length,
    invalid: plan.invalid.length,
    terminated: 0,
    notFound: 0,
    refused: 0,
    expunged: 0,
    strays: plan.strays.length,
    itemsDeleted: 0,
    runnersDeleted: 0,
    runnersBusy: 0,
    runnersLeft: 0,
    outdated: 0,
    outdatedLeft: 0,
    unhealthy: 0,
    drained: 0,
  };
}

function outcome(
  counts: ReaperCounts,
  changes: Change[],
  warnings: string[],
  dryRun: boolean,
  pool: PoolView,
): TaskOutcome {
  const would = dryRun ? "would be " : "";
  const parts = [
    counts.expired && `${counts.expired} expired`,
    counts.locked && `${counts.locked} locked`,
    counts.lostRace && `${counts.lostRace} lost to another writer`,
    counts.unfinished && `${counts.unfinished} left running by an earlier run`,
    counts.orphans && `${counts.orphans} orphans`,
    counts.lost && `${counts.lost} records of vanished instances`,
    counts.foreign && `${counts.foreign} records of instances not the pool's`,
    counts.invalid && `${counts.invalid} invalid records`,
    counts.outdated && `${counts.outdated} outdated`,
    counts.unhealthy && `${counts.unhealthy} unhealthy`,
    counts.drained && `${counts.drained} drained`,
    counts.outdatedLeft && `${counts.outdatedLeft} outdated left for later runs`,
    counts.terminated && `${counts.terminated} terminated`,
    counts.refused && `${counts.refused} refused by EC2`,
    counts.expunged && `${counts.expunged} expunged (${counts.itemsDeleted} items)`,
    counts.strays && `${counts.strays} stray artifacts deleted`,
    counts.runnersDeleted && `${counts.runnersDeleted} runners deleted`,
    counts.runnersBusy && `${counts.runnersBusy} busy runners left`,
    counts.runnersLeft && `${counts.runnersLeft} runners left for the next run`,
  ].filter(Boolean);
  const summary = dryRun && changes.length
    ? `${changes.length} changes ${would}made: ${parts.join(", ")}`
    : parts.length
    ? parts.join(", ")
    : `nothing to reap (${counts.records} records, ${counts.alive} instances alive)`;
  return { summary, found: { ...counts, pool }, changes, warnings };
}

// ---------------------------------------------------------------------------------------------
// 1. Read.

export interface TableRead {
  records: Row[];
  artifacts: ArtifactKey[];
  /** ScannedCount of the instance record pages. */
  scanned: number;
  pages: number;
}

/** Every instance record, and every heartbeat's and worker signal's key and `updatedAt`. */
export async function readTable(
  ddb: DynamoDBDocumentClient,
  table: string,
  pageSize: number | undefined,
  log: Logger,
): Promise<TableRead> {
  const records: Row[] = [];
  const instances = await queryAll(
    ddb,
    table,
    "INSTANCE",
    ["state", "threshold", "runId", "updatedAt", "resourceClass"],
    pageSize,
    (item) => {
      records.push({
        id: idOf(String(item.SK)),
        state: item.state,
        threshold: item.threshold,
        runId: item.runId,
        updatedAt: item.updatedAt,
        resourceClass: item.resourceClass,
      });
    },
    (pages) => log.info(`reaper: read ${records.length} instance records (${pages} pages)`),
  );
  const artifacts: ArtifactKey[] = [];
  for (const entity of ["HEARTBEAT", "WS"] as const) {
    // A worker signal's value (its state) is read too, for the health drains.
    const attributes = entity === "WS" ? ["updatedAt", "value"] : ["updatedAt"];
    await queryAll(ddb, table, entity, attributes, pageSize, (item) => {
      artifacts.push({
        entity,
        id: idOf(String(item.SK)),
        updatedAt: item.updatedAt,
        ...(entity === "WS" ? { value: item.value } : {}),
      });
    });
  }
  return { records, artifacts, scanned: instances.scanned, pages: instances.pages };
}

async function queryAll(
  ddb: DynamoDBDocumentClient,
  table: string,
  entity: Entity,
  attributes: string[],
  pageSize: number | undefined,
  onItem: (item: Record<string, unknown>) => void,
  onPage?: (pages: number) => void,
): Promise<{ scanned: number; pages: number }> {
  let scanned = 0;
  let pages = 0;
  let start: Record<string, unknown> | undefined;
  const names = Object.fromEntries(attributes.map((a, i) => [`#a${i}`, a]));
  do {
    const out = await ddb.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: "#pk = :pk",
        ProjectionExpression: ["#sk", ...Object.keys(names)].join(", "),
        ExpressionAttributeNames: { "#pk": "PK", "#sk": "SK", ...names },
        ExpressionAttributeValues: { ":pk": pk(entity) },
        ExclusiveStartKey: start,
        Limit: pageSize,
      }),
    );
    for (const item of out.Items ?? []) onItem(item);
    scanned += out.ScannedCount ?? 0;
    pages++;
    start = out.LastEvaluatedKey;
    if (start) onPage?.(pages);
  } while (start);
  return { scanned, pages };
}

/**
 * Whether an instance is proven to be the pool's, by what EC2 says about it (never by a record):
 * the ownership tag with this table as value (the template stamps it), or EC2's own
 * {@link TEMPLATE_TAG} naming one of the pool's templates. An instance tagged for another pool is
 * that pool's, whatever template it came from.
 */
export function ownership(
  instance: Pick<Instance, "Tags">,
  table: string,
  templateIds: Set<string>,
): Proof | undefined {
  const tag = (key: string) => instance.Tags?.find((t) => t.Key === key)?.Value;
  const owner = tag(OWNER_TAG);
  if (owner !== undefined) return owner === table ? "tag" : undefined;
  const template = tag(TEMPLATE_TAG);
  return template !== undefined && templateIds.has(template) ? "template" : undefined;
}

/**
 * The pool as EC2 sees it: its launch templates (those carrying the ownership tag, whatever their
 * name, plus `legacyTemplateIds`), its live instances (by the ownership tag, and by
 * {@link TEMPLATE_TAG}), and, by id, the instances records name that those listings do not hold.
 * The `ID#launch_template` record is not read: runners can write it.
 */
export async function readPool(
  ec2: EC2Client,
  table: string,
  legacyTemplateIds: string[],
  records: Pick<Row, "id">[],
  log: Logger,
): Promise<Pool> {
  const templateIds = new Set(legacyTemplateIds);
  const templates = await ec2.send(
    new DescribeLaunchTemplatesCommand({
      Filters: [{ Name: `tag:${OWNER_TAG}`, Values: [table] }],
    }),
  );
  const templatesByName = new Map<string, string>();
  for (const t of templates.LaunchTemplates ?? []) {
    templateIds.add(t.LaunchTemplateId!);
    templatesByName.set(t.LaunchTemplateName!, t.LaunchTemplateId!);
  }

  const alive = new Map<string, LiveInstance>();
  const foreign = new Map<string, LiveInstance>();
  const add = (instance: Instance) => {
    if (!ALIVE_EC2.includes(instance.State?.Name ?? "")) return;
    const live: LiveInstance = {
      id: instance.InstanceId!,
      launched: instance.LaunchTime && timestamp(instance.LaunchTime),
      proof: ownership(instance, table, templateIds),
      imageId: instance.ImageId,
      tags: Object.fromEntries((instance.Tags ?? []).map((t) => [t.Key ?? "", t.Value ?? ""])),
    };
    (live.proof ? alive : foreign).set(live.id, live);
  };
  const state = { Name: "instance-state-name", Values: ALIVE_EC2 };
  for await (const i of describe(ec2, [{ Name: `tag:${OWNER_TAG}`, Values: [table] }, state])) {
    add(i);
  }
  for (const batch of chunks([...templateIds].sort(), FILTER_VALUES - ALIVE_EC2.length)) {
    for await (const i of describe(ec2, [{ Name: `tag:${TEMPLATE_TAG}`, Values: batch }, state])) {
      add(i);
    }
  }
  // Records the listings cannot vouch for: alive elsewhere, or gone.
  const unchecked = records.map((r) => r.id).filter((id) => !alive.has(id) && !foreign.has(id));
  for (const instance of await describeIds(ec2, unchecked)) add(instance);
  if (unchecked.length > FILTER_VALUES) {
    log.info(`reaper: looked up ${unchecked.length} instances by id`);
  }
  return { templateIds, templatesByName, alive, foreign };
}

/**
 * The default version of the pool's template (the one named `name` among those tagged for this
 * table) and its AMI, as EC2 holds them: one DescribeLaunchTemplateVersions call, none when there
 * is no such template (then versions are not judged and nothing is drained for them).
 */
export async function readTemplateDefault(
  ec2: EC2Client,
  pool: Pick<Pool, "templatesByName">,
  name: string,
): Promise<TemplateDefault | null> {
  const id = pool.templatesByName.get(name);
  if (id === undefined) return null;
  const out = await ec2.send(
    new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateId: id, Versions: ["$Default"] }),
  );
  const version = out.LaunchTemplateVersions?.[0];
  if (!version?.VersionNumber) return null;
  return { id, version: version.VersionNumber, ami: version.LaunchTemplateData?.ImageId ?? "" };
}

/**
 * The instances EC2 knows among these ids, in any state: an `instance-id` filter of at most
 * {@link FILTER_VALUES} values and no other filter (an unknown id is no error there, unlike
 * `InstanceIds`, which fails the whole call with InvalidInstanceID.NotFound).
 */
export async function describeIds(ec2: EC2Client, ids: string[]): Promise<Instance[]> {
  const found: Instance[] = [];
  for (const batch of chunks(ids, FILTER_VALUES)) {
    for await (const i of describe(ec2, [{ Name: "instance-id", Values: batch }])) found.push(i);
  }
  return found;
}

async function* describe(ec2: EC2Client, filters: Filter[]) {
  let token: string | undefined;
  do {
    const out = await ec2.send(
      new DescribeInstancesCommand({ Filters: filters, MaxResults: 1000, NextToken: token }),
    );
    for (const reservation of out.Reservations ?? []) yield* reservation.Instances ?? [];
    token = out.NextToken;
  } while (token);
}

// ---------------------------------------------------------------------------------------------
// 2. Classify.

export interface ClassifyInput {
  records: Row[];
  artifacts: ArtifactKey[];
  pool: Pool;
  /** Now, in epoch milliseconds. */
  now: number;
  /** The grace period: young orphans, young records of unlisted instances, young strays. */
  graceMs: number;
}

/** What the reaper will do, by instance id; see {@link classify}. */
export interface Plan {
  /** Live records with a threshold in the past: lock, then terminate (or expunge if gone). */
  expired: string[];
  /** Records already terminated whose pool instance still runs: terminate. */
  unfinished: string[];
  /** Pool instances with no record, launched before the grace period: terminate. */
  orphans: string[];
  /** Live records, unexpired or invalid, older than the grace, whose instance is gone: lock, expunge. */
  lost: string[];
  /** Records already terminated whose instance is gone: expunge. */
  gone: string[];
  /** Records of instances alive but not the pool's: reported only. */
  foreign: string[];
  /** Records with an unknown state or a threshold that is not a timestamp: reported only. */
  invalid: string[];
  /** Heartbeats and worker signals with no record, older than the grace: delete. */
  strays: ArtifactKey[];
  reasons: Map<string, string>;
  warnings: string[];
}

/**
 * Decides what to do with each record and pool instance. A record is never enough to terminate:
 * only an instance in `pool.alive` is ever planned for termination; a record naming an instance
 * alive outside the pool is a warning. Only a threshold that is a strict UTC timestamp
 * ({@link parseTimestamp}) can expire a record.
 */
export function classify(input: ClassifyInput): Plan {
  const { records, artifacts, pool, now, graceMs } = input;
  const grace = now - graceMs;
  const plan: Plan = {
    expired: [],
    unfinished: [],
    orphans: [],
    lost: [],
    gone: [],
    foreign: [],
    invalid: [],
    strays: [],
    reasons: new Map(),
    warnings: [],
  };
  const why = (id: string, reason: string) => plan.reasons.set(id, reason);
  const show = JSON.stringify;
  for (const r of records) {
    const inPool = pool.alive.has(r.id);
    if (!inPool && pool.foreign.has(r.id)) {
      plan.foreign.push(r.id);
      plan.warnings.push(
        `record ${r.id} (state ${
          show(r.state)
        }) names an instance alive in EC2 that is not proven the pool's (no ${OWNER_TAG} tag for this table, not launched from its template); not terminated`,
      );
      continue;
    }
    if (r.state === "terminated") {
      if (inPool) {
        plan.unfinished.push(r.id);
        why(r.id, "record already terminated, instance still alive");
      } else {
        plan.gone.push(r.id);
        why(r.id, "record terminated, instance gone from EC2");
      }
      continue;
    }
    if (typeof r.state !== "string" || !LIVE_STATES.has(r.state)) {
      plan.invalid.push(r.id);
      plan.warnings.push(
        `record ${r.id} has state ${show(r.state)}; expected one of ${
          [...LIVE_STATES, "terminated"].join(", ")
        }; left alone`,
      );
      continue;
    }
    const threshold = parseTimestamp(r.threshold);
    if (threshold === undefined) {
      plan.warnings.push(
        `record ${r.id} has threshold ${
          show(r.threshold)
        }, not a UTC timestamp like 2025-04-24T18:31:04Z; it never expires by threshold`,
      );
    }
    if (threshold !== undefined && threshold < now) {
      plan.expired.push(r.id);
      why(
        r.id,
        `expired ${r.state} (threshold ${r.threshold})${inPool ? "" : ", instance gone from EC2"}`,
      );
    } else if (!inPool) {
      // A record just written may name an instance EC2 does not list yet: give it the grace.
      const updated = parseTimestamp(r.updatedAt);
      if (updated !== undefined && updated <= grace) {
        plan.lost.push(r.id);
        why(r.id, `record ${r.state} but instance gone from EC2`);
      }
    } else if (threshold === undefined) plan.invalid.push(r.id);
  }
  const recorded = new Set(records.map((r) => r.id));
  for (const instance of pool.alive.values()) {
    const launched = parseTimestamp(instance.launched);
    if (!recorded.has(instance.id) && launched !== undefined && launched < grace) {
      plan.orphans.push(instance.id);
      why(instance.id, `orphan: no record, launched ${instance.launched}`);
    }
  }
  for (const key of artifacts) {
    const updated = parseTimestamp(key.updatedAt);
    if (!recorded.has(key.id) && updated !== undefined && updated < grace) plan.strays.push(key);
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------
// 3. Lock.

/** A lock's condition on the record as read; names `#state`, `#threshold`, `#runId` are bound. */
export interface LockCondition {
  expression: string;
  values: Record<string, unknown>;
}

/** DESIGN.md's lock: the threshold is still past (state and runId unchanged are always added). */
export function expiredCondition(now: string): LockCondition {
  return { expression: "#threshold < :now", values: { ":now": now } };
}

/** The record is as read: its threshold unchanged (state and runId are always added). */
export function unchangedCondition(row: Pick<Row, "threshold">): LockCondition {
  return row.threshold === undefined
    ? { expression: "attribute_not_exists(#threshold)", values: {} }
    : { expression: "#threshold = :thresholdRead", values: { ":thresholdRead": row.threshold } };
}

export interface LockTarget {
  row: Row;
  condition: LockCondition;
}

export interface LockResult {
  /** Ids locked by this run, in the order given (a lost reply recognised counts). */
  locked: string[];
  /** Ids another writer changed since the read. */
  lostRace: string[];
  /** Ids not tried: the run's deadline had passed. */
  skipped: string[];
  errors: string[];
}

/**
 * DESIGN.md's termination lock on each target: `state` and `runId` as read AND the caller's
 * condition, setting `state = terminated`, `threshold`/`updatedAt` = now, `runId = ""` and the TTL
 * `expiresAt`. A failed condition returns the item as it is (ReturnValuesOnConditionCheckFailure
 * ALL_OLD): if that is exactly what this lock writes, the reply of an earlier attempt was lost
 * and the SDK retried it, so the record is ours; otherwise another writer won.
 */
export async function lockRecords(
  ddb: DynamoDBDocumentClient,
  table: string,
  targets: LockTarget[],
  options: {
    now: string;
    expiresAt: number;
    concurrency: number;
    log: Logger;
    /** True once no new lock may start (the run's deadline). */
    stop?: () => boolean;
  },
): Promise<LockResult> {
  const { now, expiresAt } = options;
  const won = new Set<string>();
  const lostRace = new Set<string>();
  const skipped = new Set<string>();
  const errors: string[] = [];
  const tick = progress(options.log, "locked", targets.length);
  await forEachLimit(targets, options.concurrency, async ({ row, condition }) => {
    if (options.stop?.()) {
      skipped.add(row.id);
      return;
    }
    const runId = row.runId === undefined ? "attribute_not_exists(#runId)" : "#runId = :runIdRead";
    try {
      await ddb.send(
        new UpdateCommand({
          TableName: table,
          Key: { PK: pk("INSTANCE"), SK: sk(row.id) },
          ConditionExpression: `#state = :read AND ${condition.expression} AND ${runId}`,
          UpdateExpression:
            "SET #state = :terminated, #threshold = :lockedAt, #runId = :empty, #updatedAt = :lockedAt, #ttl = :ttl",
          ExpressionAttributeNames: {
            "#state": "state",
            "#threshold": "threshold",
            "#runId": "runId",
            "#updatedAt": "updatedAt",
            "#ttl": "expiresAt",
          },
          ExpressionAttributeValues: {
            ":read": row.state,
            ":lockedAt": now,
            ":terminated": "terminated",
            ":empty": "",
            ":ttl": expiresAt,
            ...(row.runId === undefined ? {} : { ":runIdRead": row.runId }),
            ...condition.values,
          },
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        }),
      );
      won.add(row.id);
    } catch (error) {
      if ((error as Error).name !== "ConditionalCheckFailedException") {
        errors.push(`lock ${row.id}: ${describeError(error)}`);
      } else if (isOwnLock((error as { Item?: unknown }).Item, now, expiresAt)) {
        options.log.info(`reaper: ${row.id} was already locked by this run (a lost reply)`);
        won.add(row.id);
      } else lostRace.add(row.id);
    }
    tick();
  });
  return {
    locked: targets.map((t) => t.row.id).filter((id) => won.has(id)),
    lostRace: targets.map((t) => t.row.id).filter((id) => lostRace.has(id)),
    skipped: targets.map((t) => t.row.id).filter((id) => skipped.has(id)),
    errors,
  };
}

/** Whether an item (as DynamoDB returns it) is exactly what this run's lock writes. */
function isOwnLock(raw: unknown, now: string, expiresAt: number): boolean {
  if (!raw || typeof raw !== "object") return false;
  const item = unmarshall(raw as Parameters<typeof unmarshall>[0]);
  return item.state === "terminated" && item.threshold === now && item.updatedAt === now &&
    item.runId === "" && Number(item.expiresAt) === expiresAt;
}

// ---------------------------------------------------------------------------------------------
// 4. Terminate.

/** EC2 errors that name ids to drop from a batch, which is then retried without them. */
const NAMED_ID_ERRORS = new Set([
  "InvalidInstanceID.NotFound",
  "InvalidInstanceID.Malformed",
  "OperationNotPermitted",
]);

export interface Terminated {
  terminated: string[];
  notFound: string[];
  refused: [string, string][];
  /** Ids not tried: the run's deadline had passed. */
  skipped: string[];
  errors: string[];
}

/**
 * TerminateInstances on pool instances only: each must carry its proof (see {@link readPool});
 * anything else throws, so no caller can terminate on a record's word. Instances proven by tag
 * and by template go in separate batches: an IAM policy that allows only tagged instances then
 * refuses the second kind without blocking the first. Ids EC2 names in an error never block
 * the rest of their batch.
 */
export async function terminateOwned(
  ec2: EC2Client,
  instances: LiveInstance[],
  log: Logger,
  /** True once no new batch may start (the run's deadline). */
  stop?: () => boolean,
): Promise<Terminated> {
  const done: Terminated = { terminated: [], notFound: [], refused: [], skipped: [], errors: [] };
  const unproven = instances.filter((i) => !i.proof).map((i) => i.id);
  if (unproven.length) {
    throw new Error(
      `refusing to terminate instances not proven the pool's: ${unproven.join(", ")}`,
    );
  }
  const ids = [...new Set(instances.map((i) => i.id))];
  const proofOf = new Map(instances.map((i) => [i.id, i.proof]));
  for (const proof of ["tag", "template"] as const) {
    const group = ids.filter((id) => proofOf.get(id) === proof);
    for (const batch of chunks(group, TERMINATE_BATCH)) {
      if (stop?.()) {
        done.skipped.push(...batch);
        continue;
      }
      let rest = batch;
      while (rest.length) {
        try {
          await ec2.send(new TerminateInstancesCommand({ InstanceIds: rest }));
          done.terminated.push(...rest);
          break;
        } catch (error) {
          const { name, message } = error as Error;
          const named = NAMED_ID_ERRORS.has(name) ? idsNamed(message, rest) : [];
          if (named.length === 0) {
            const hint = proof === "template" && name === "UnauthorizedOperation"
              ? ` (these are proven the pool's by ${TEMPLATE_TAG}, not tagged ${OWNER_TAG}: allow them in the IAM policy, see the README)`
              : "";
            done.errors.push(`terminate ${rest.length} instances: ${describeError(error)}${hint}`);
            break;
          }
          if (name === "OperationNotPermitted") {
            done.refused.push(...named.map((id): [string, string] => [id, message]));
          } else done.notFound.push(...named);
          rest = rest.filter((id) => !named.includes(id));
        }
      }
      log.info(`reaper: terminated ${done.terminated.length} of ${ids.length} instances`);
    }
  }
  return done;
}

/** The ids of a batch that an error message names (as whole words). */
function idsNamed(message: string, ids: string[]): string[] {
  const words = new Set(message.split(/[^A-Za-z0-9-]+/));
  return ids.filter((id) => words.has(id));
}

// ---------------------------------------------------------------------------------------------
// 5. Expunge.

export interface Expunged {
  /** Instances whose heartbeat, worker signal and record are all deleted. */
  ids: string[];
  /** Stray artifacts deleted. */
  strays: ArtifactKey[];
  items: number;
  /** Items not tried: the run's deadline had passed. */
  skipped: number;
  errors: string[];
}

/**
 * Deletes, for each id, its heartbeat and worker signal, then, once both are gone, its record:
 * the record is what makes a run look for an instance's artifacts, so it goes last, and a crash
 * or a failed batch leaves a record the next run expunges again. `strays` (artifacts without a
 * record) are deleted with the artifacts.
 */
export async function expunge(
  ddb: DynamoDBDocumentClient,
  table: string,
  ids: string[],
  strays: ArtifactKey[],
  options: DeleteOptions,
): Promise<Expunged> {
  const artifacts = [
    ...ids.flatMap((id) => (["HEARTBEAT", "WS"] as const).map((entity) => ({ entity, id }))),
    ...strays,
  ];
  const first = await deleteKeys(ddb, table, artifacts, options, "artifact items deleted");
  const done = (key: string) => !first.failed.has(key) && !first.skipped.has(key);
  const ready = ids.filter((id) => done(`HEARTBEAT ${id}`) && done(`WS ${id}`));
  const records = ready.map((id) => ({ entity: "INSTANCE" as const, id }));
  const second = await deleteKeys(ddb, table, records, options, "instance records deleted");
  const expunged = ready.filter((id) =>
    !second.failed.has(`INSTANCE ${id}`) && !second.skipped.has(`INSTANCE ${id}`)
  );
  const sweptStrays = strays.filter((s) => done(`${s.entity} ${s.id}`));
  const notDeleted = first.failed.size + first.skipped.size + second.failed.size +
    second.skipped.size;
  return {
    ids: expunged,
    strays: sweptStrays,
    items: artifacts.length + records.length - notDeleted,
    // Records not tried because their artifacts were not count as skipped too.
    skipped: first.skipped.size + ids.length - ready.length -
      ids.filter((id) => first.failed.has(`HEARTBEAT ${id}`) || first.failed.has(`WS ${id}`))
        .length +
      second.skipped.size,
    errors: [...first.errors, ...second.errors],
  };
}

interface DeleteOptions {
  concurrency: number;
  sleep: (ms: number) => Promise<void>;
  log: Logger;
  /** True once no new request may start (the run's deadline). */
  stop?: () => boolean;
}

/** BatchWriteItem deletes, 25 per request, unprocessed items retried with backoff and jitter. */
async function deleteKeys(
  ddb: DynamoDBDocumentClient,
  table: string,
  keys: { entity: Entity; id: string }[],
  options: DeleteOptions,
  label: string,
): Promise<{ failed: Set<string>; skipped: Set<string>; errors: string[] }> {
  const failed = new Set<string>();
  const skipped = new Set<string>();
  const errors: string[] = [];
  const tick = progress(options.log, label, keys.length);
  await forEachLimit(chunks(keys, WRITE_BATCH), options.concurrency, async (batch) => {
    if (options.stop?.()) {
      for (const { entity, id } of batch) skipped.add(`${entity} ${id}`);
      return;
    }
    let pending = batch.map(({ entity, id }) => ({
      DeleteRequest: { Key: { PK: pk(entity), SK: sk(id) } },
    }));
    try {
      for (let attempt = 0; pending.length; attempt++) {
        if (attempt === WRITE_ATTEMPTS) {
          throw new Error(`${pending.length} items still unprocessed after ${attempt} attempts`);
        }
        if (attempt > 0) {
          await options.sleep(Math.min(50 * 2 ** attempt, 5000) * (0.5 + Math.random()));
        }
        const out = await ddb.send(new BatchWriteCommand({ RequestItems: { [table]: pending } }));
        pending = (out.UnprocessedItems?.[table] ?? []) as typeof pending;
      }
    } catch (error) {
      errors.push(`delete ${label.split(" ")[0]} items: ${describeError(error)}`);
      for (const { DeleteRequest: { Key } } of pending) {
        failed.add(`${Key.PK.replace(/^TYPE#/, "")} ${idOf(Key.SK)}`);
      }
    }
    for (let i = 0; i < batch.length; i++) tick();
  });
  return { failed, skipped, errors };
}

// ---------------------------------------------------------------------------------------------
// 6. Runners.

interface GithubRunner {
  id: number;
  name: string;
  status: string;
  busy: boolean;
}

/** The instance id a runner registration's name starts with (`i-0abc-2` -> `i-0abc`). */
export function runnerInstanceId(name: string): string | undefined {
  // The whole leading id: i-0abc is not a prefix match of i-0abcd-large.
  return /^(i-[0-9a-f]{8,17})(?:-|$)/.exec(name)?.[1];
}

/**
 * Reconciles the pool's runner registrations with its live instances: lists them (100 per page)
 * and deletes each whose name starts with the id of an instance not alive in EC2, when it is
 * offline, or online but its instance was terminated by this run. Busy runners are left alone
 * and reported. Deletions stop when the time budget is spent (GitHub spaces them one second
 * apart); what is left is counted and deleted by the next runs.
 */
export async function reconcileRunners(
  ctx: TaskContext,
  pool: Pool,
  terminated: Set<string>,
  report: Pick<Report, "counts" | "changes" | "warnings">,
  options: Pick<ReaperOptions, "runnerBudgetMs" | "clock"> = {},
): Promise<void> {
  const { counts, changes, warnings } = report;
  const { github } = ctx.clients;
  const scope = ctx.desired.github.scope;
  if (!github || !scope) {
    if (terminated.size) {
      warnings.push(
        `no GitHub ${
          github ? "--repo or --org" : "token"
        }: runner registrations of ${terminated.size} terminated instances not deleted`,
      );
    }
    return;
  }
  const clock = options.clock ?? (() => performance.now());
  const deadline = clock() + (options.runnerBudgetMs ?? ctx.desired.reaper.runnerCleanupSec * 1000);
  const base = "repo" in scope
    ? { path: "/repos/{owner}/{repo}", params: { owner: scope.repo.owner, repo: scope.repo.name } }
    : { path: "/orgs/{org}", params: { org: scope.org } };
  try {
    const runners: GithubRunner[] = await github.paginate(`GET ${base.path}/actions/runners`, {
      ...base.params,
      per_page: 100,
    });
    // Registrations of instances the pool does not hold alive: is any alive in EC2 at all?
    const named = runners.flatMap((r) => {
      const id = runnerInstanceId(r.name);
      return id && !pool.alive.has(id) && !pool.foreign.has(id) ? [id] : [];
    });
    const unknown = [...new Set(named)].filter((id) => !terminated.has(id));
    const elsewhere = new Set(
      (await describeIds(ctx.clients.ec2, unknown))
        .filter((i) => ALIVE_EC2.includes(i.State?.Name ?? ""))
        .map((i) => i.InstanceId!),
    );
    for (const runner of runners) {
      const id = runnerInstanceId(runner.name);
      if (!id) continue;
      const reaped = terminated.has(id);
      const dead = reaped ||
        (!pool.alive.has(id) && !pool.foreign.has(id) && !elsewhere.has(id));
      if (!dead || (runner.status !== "offline" && !reaped)) continue;
      const target = `runner ${runner.name} (#${runner.id})`;
      if (!runner.busy && !ctx.dryRun) {
        if (clock() >= deadline || ctx.budget.expired()) {
          counts.runnersLeft++;
          continue;
        }
        try {
          await github.request(`DELETE ${base.path}/actions/runners/{runner_id}`, {
            ...base.params,
            runner_id: runner.id,
          });
        } catch (error) {
          const status = (error as { status?: number }).status;
          if (status === 404) continue;
          if (status !== 422) throw error;
          runner.busy = true;
        }
      }
      if (runner.busy) {
        counts.runnersBusy++;
        warnings.push(`${target} of gone instance ${id} is busy; left alone`);
      } else {
        counts.runnersDeleted++;
        changes.push({ action: "delete-runner", target, detail: `instance ${id} is gone` });
      }
    }
    if (counts.runnersLeft) {
      warnings.push(
        `${counts.runnersLeft} runner registrations of gone instances left for the next run (the runner phase's time budget, --runner-cleanup-sec, was spent)`,
      );
    }
  } catch (error) {
    warnings.push(`runner registrations not cleaned: ${describeError(error)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function* chunks<T>(items: T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

/** Runs `fn` over the items with at most `limit` in flight; `fn` must not throw. */
async function forEachLimit<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const iterator = items[Symbol.iterator]();
  const worker = async () => {
    for (let next = iterator.next(); !next.done; next = iterator.next()) await fn(next.value);
  };
  await Promise.all(Array.from({ length: limit }, worker));
}

/** A counter that logs every {@link PROGRESS_EVERY} steps of a long phase. */
function progress(log: Logger, label: string, total: number): () => void {
  let n = 0;
  return () => {
    n++;
    if (n % PROGRESS_EVERY === 0 || (n === total && total >= PROGRESS_EVERY)) {
      log.info(`reaper: ${label}: ${n} of ${total}`);
    }
  };
}
