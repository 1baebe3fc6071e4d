/**
 * The reaper's report: what a run has found, done, warned about and failed at
 * ({@link Report}, {@link ReaperCounts}), and how it becomes the task's outcome or error
 * ({@link finish}, {@link outcome}). Reads and writes nothing.
 *
 * @module
 */
import type { PoolView } from "../rollout.ts";
import type { LaunchToRunner } from "./drain.ts";
import type { Change, TaskOutcome } from "../task.ts";
import type { Plan } from "./classify.ts";
import type { ArtifactKey, Pool, TableRead } from "./reads.ts";

/** What the reaper counted, by category; `found` of its outcome. */
export interface ReaperCounts {
  records: number;
  /** Items DynamoDB read (ScannedCount of every page of instance records). */
  itemsRead: number;
  pages: number;
  /** Launch templates whose instances count as the pool's. */
  templates: number;
  /** Pool instances alive in EC2 (proven by tag or template); a targeted run: of those described. */
  alive: number;
  /** 1 when this run listed the whole pool (a sweep, lib/reaper/sweep.ts), else 0. */
  swept: number;
  /** Instances a targeted run described by id (0 on a sweep). */
  described: number;
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
  /** Launch to first `UD_REG_OK` of the instances described (`found.launchToRunner`). */
  launchToRunner?: LaunchToRunner;
  /** Under dry-run: the table does not exist yet (TableRead's `missing`). */
  tableMissing: boolean;
}

export function newReport(read: TableRead, pool: Pool, plan: Plan): Report {
  return {
    counts: countsOf(read, pool, plan),
    changes: [],
    warnings: [...plan.warnings],
    errors: [],
    skipped: [],
    reasons: plan.reasons,
    pool: { template: null, classes: {} },
    tableMissing: read.missing === true,
  };
}

/** The outcome; the task fails when an operation failed or work was left at the deadline. */
export function finish(report: Report): TaskOutcome {
  const errors = [...report.errors];
  if (report.skipped.length) {
    errors.unshift(
      `the run's deadline passed: ${report.skipped.join(", ")} not started; the next run does them`,
    );
  }
  const done = outcome(report.counts, report.changes, report.warnings, false, report.pool);
  if (report.launchToRunner) done.found.launchToRunner = report.launchToRunner;
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

export function change(
  action: string,
  id: string,
  reasons: Map<string, string>,
  extra?: string,
): Change {
  const detail = [reasons.get(id), extra].filter(Boolean).join("; ");
  return { action, target: `instance ${id}`, detail };
}

export function strayChange(key: ArtifactKey): Change {
  return {
    action: "delete",
    target: `${key.entity === "WS" ? "worker signal" : "heartbeat"} ${key.id}`,
    detail: `no instance record, last written ${key.updatedAt}`,
  };
}

export function countsOf(read: TableRead, pool: Pool, plan: Plan): ReaperCounts {
  return {
    swept: pool.checked ? 0 : 1,
    described: pool.checked?.size ?? 0,
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

export function outcome(
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
    : counts.swept
    ? `nothing to reap (${counts.records} records, ${counts.alive} instances alive)`
    : `nothing to reap (${counts.records} records; ${counts.described} instances described by id, ${counts.alive} alive; no sweep due)`;
  return { summary, found: { ...counts, pool }, changes, warnings };
}
