/**
 * Phase 2b of the reaper, rollout and health: reads the template's default version, plans with
 * lib/rollout.ts (pure) which idle pool instances to drain (launched from another template
 * version, a few per class and run, or unable to serve: a `*_FAILED` worker signal, a stale or
 * missing heartbeat), and puts the pool view per resource class in the report. Drained
 * instances are then locked only if still idle and unchanged since the read, terminated and
 * expunged like expired ones. Reads only (DescribeLaunchTemplateVersions); writes nothing.
 *
 * @module
 */
import {
  type Drain,
  type Heartbeat,
  planRollout,
  type PoolInstance,
  type RecordRow,
  type TemplateDefault,
  type WorkerSignal,
} from "../rollout.ts";
import { describeError } from "../task.ts";
import { parseTimestamp, type Plan } from "./classify.ts";
import type { ReaperContext } from "./context.ts";
import { type Pool, readTemplateDefault, type TableRead } from "./reads.ts";
import type { Report } from "./report.ts";

/**
 * Phase 2b, rollout and health: reads the template's default version (a failure skips the rollout
 * with a warning, never the reaping), plans which idle instances to drain and why
 * (lib/rollout.ts), and puts the pool view in the report. `now` is the run's start.
 */
export async function drainPhase(
  ctx: ReaperContext,
  read: TableRead,
  pool: Pool,
  plan: Plan,
  now: string,
  report: Report,
  /** The default version, when its read was started with the others. */
  templateRead?: Promise<TemplateDefault | null>,
): Promise<Drain[]> {
  const name = ctx.desired.launchTemplate.name;
  const reading = templateRead ?? readTemplateDefault(ctx.clients.ec2, pool, name);
  const template = await reading.catch((error) => {
    report.warnings.push(
      `template versions not judged (no rollout this run): reading the default version of ${name} failed: ${
        describeError(error)
      }`,
    );
    return null;
  });
  // Heartbeats are judged against the run's start, which is before they were read: a slow read
  // (minutes over a big pool) must never age them.
  const judged = rolloutReading(read, pool, plan, template, new Date(parseTimestamp(now)!));
  const rollout = planRollout(judged, ctx.desired.reaper.rollout);
  report.pool = rollout.view;
  report.launchToRunner = launchToRunner(judged);
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

/** Seconds from launch to a first `UD_REG_OK`: how long a job waited for a cold instance. */
export interface LaunchToRunner {
  count: number;
  sum: number;
  min: number;
  max: number;
}

/**
 * From launch (EC2's launch time) to its first registration's `UD_REG_OK` (the worker signal's
 * `updatedAt`, while the signal is still that one: its run id the instance's `InitialRunId`
 * tag), over the instances the run described; undefined when there is none. A warm instance's
 * first signal is not a job's wait, so warm launches (`InitialRunId` warm-…) are left out.
 */
export function launchToRunner(
  reading: Pick<ReturnType<typeof rolloutReading>, "instances" | "signals">,
): LaunchToRunner | undefined {
  const waits: number[] = [];
  for (const instance of reading.instances.values()) {
    const initial = instance.tags.InitialRunId;
    const signal = reading.signals.get(instance.id);
    if (!initial || initial.startsWith("warm-") || signal?.state !== "UD_REG_OK") continue;
    if (signal.runId !== initial || !signal.updatedAt || !instance.launchTime) continue;
    const seconds = (Date.parse(signal.updatedAt) - Date.parse(instance.launchTime)) / 1000;
    if (Number.isFinite(seconds) && seconds >= 0) waits.push(seconds);
  }
  if (waits.length === 0) return undefined;
  return {
    count: waits.length,
    sum: waits.reduce((a, b) => a + b, 0),
    min: Math.min(...waits),
    max: Math.max(...waits),
  };
}
