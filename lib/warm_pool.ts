/**
 * The warm pool: keeps, per resource class, a minimum number of idle instances ready to be
 * claimed, so a job starts on a machine that is already up instead of waiting for a cold boot.
 * Off by default (`--warm-pool` unset: the task returns at once and calls nothing).
 *
 * `reconcileWarmPool` runs these phases, each a module of `lib/warm_pool/` (their shared types in
 * `context.ts`, the inputs in `inputs.ts`, the outcome and report view in `view.ts`):
 *
 * 1. **read** ({@link readWarmState}): the table's `resource_class_config` and `subnet_ids`
 *    records (what provision reads), every instance record, heartbeat and worker signal, the
 *    pool's launch template (tagged for this table) and its live instances (by the ownership tag,
 *    or by EC2's template tag naming that template, as the reaper proves them).
 * 2. **plan** ({@link planWarmPool}, pure): per class, the minimum now (0 outside the schedule);
 *    its idle, unclaimed, unexpired instances sorted into **ready** (worker signal `UD_OK`, or
 *    `UD_REMOVE_REG_REMOVE_RUN_OK` after a job, and a heartbeat at most 15 s old), **booting**
 *    (not ready yet: within `--boot-grace-min` of launch, or with a fresh heartbeat, such as an
 *    instance just released and still removing its runner) and unable to serve (a `*_FAILED`
 *    signal, or silent past the boot grace: the reaper's to drain). Up to the minimum, ready instances are
 *    **kept**: those of the template's default version first, newest first (an outdated one is
 *    kept only while no current one can take its place; the reaper's rollout drains outdated idle
 *    instances, a few per run, and this task launches their replacements). The shortfall
 *    `minimum - kept - booting` is launched.
 * 3. **keep warm** ({@link keepWarm}): a kept instance whose threshold was never advertised, or
 *    has half its hold or less left, gets a conditional UpdateItem (only while the record is still
 *    idle, unclaimed and unchanged since the read: a claim in between wins, nothing else changes)
 *    setting `threshold = now + --warm-pool-hold-min` and `advertisedThreshold` to the same, then
 *    one message in its class's queue in provision's format (`id`, `resourceClass`,
 *    `instanceType`, `cpu`, `mmem`, `usageClass`, `threshold`). Instances above the minimum, and
 *    all of them outside the schedule, are left to expire and be reaped as before.
 * 4. **launch** ({@link launch}): per class short of its minimum, one CreateFleet (`instant`, the
 *    pool's template at `$Default`, one override per subnet with the class's vCPUs and memory as
 *    provision asks for them), tagged `InitialRunId=warm-<class>-<time>` (never a workflow run id,
 *    which is a number), `AllowSelfTermination=true` and the ownership tag; then each instance's
 *    record, written idle and unclaimed (`state=idle`, `runId=""`, `threshold = now + hold`).
 *    A launch is advertised only once a later run finds it ready. A failed launch (capacity,
 *    quota) is reported, the rest of the task still runs, and the next run tries again.
 *
 * Writes: UpdateItem and PutItem on instance records, SendMessageBatch, CreateFleet. Under
 * `--dry-run` it reads, and lists what it would keep warm and launch.
 *
 * @module
 */
import type { TaskOutcome } from "./task.ts";
import type { WarmContext } from "./warm_pool/context.ts";
import { minimumsAt, provisionMismatches } from "./warm_pool/inputs.ts";
import { keepWarm } from "./warm_pool/keep.ts";
import { launch } from "./warm_pool/launch.ts";
import { planWarmPool } from "./warm_pool/plan.ts";
import { readWarmState } from "./warm_pool/read.ts";
import { finish } from "./warm_pool/view.ts";
import type { Progress } from "./warm_pool/context.ts";

export type { WarmPoolDesired } from "./warm_pool/context.ts";
export {
  type DesiredWarmPool,
  INPUTS,
  instanceHoursPerDay,
  MAX_WARM_PER_CLASS,
  minimumsAt,
  parseWarmPool,
  type UsageClass,
} from "./warm_pool/inputs.ts";
export { fleetRequest, WARM_TAG, warmRunId } from "./warm_pool/launch.ts";
export { type PoolMessage } from "./warm_pool/keep.ts";
export {
  planWarmPool,
  READY_HEARTBEAT_SEC,
  type WarmClass,
  type WarmPlan,
} from "./warm_pool/plan.ts";
export { readWarmState, type WarmState } from "./warm_pool/read.ts";
export {
  isWarmView,
  type WarmClassView,
  warmLine,
  warmTable,
  type WarmView,
} from "./warm_pool/view.ts";

/** Test hooks. */
export interface WarmPoolOptions {
  /** Awaited after the read, before the first write (tests put a claim here). */
  afterRead?: () => Promise<void>;
}

/** The warm pool task: see the module documentation. */
export async function reconcileWarmPool(
  ctx: WarmContext,
  options: WarmPoolOptions = {},
): Promise<TaskOutcome> {
  const desired = ctx.desired.warmPool;
  if (Object.keys(desired.minimum).length === 0) {
    return { summary: "no warm pool (--warm-pool not set)", found: {}, changes: [] };
  }
  const now = new Date(Math.floor(ctx.now().getTime() / 1000) * 1000);
  const read = await readWarmState(ctx);
  const plan = planWarmPool({
    ...read,
    minimum: minimumsAt(desired, now),
    usageClass: desired.usageClass,
    short: new Set(
      Object.entries(read.shortages).filter(([, s]) => Date.parse(s.until) > now.getTime())
        .map(([key]) => key),
    ),
    now,
    holdMs: desired.holdMin * 60_000,
    bootGraceMin: ctx.desired.reaper.rollout.bootGraceMin,
  });
  ctx.log.info(
    `warm-pool: ${
      Object.entries(plan.classes).map(([c, v]) =>
        `${c} ${v.ready} ready, ${v.booting} booting of ${v.minimum}`
      ).join("; ")
    }`,
  );
  await options.afterRead?.();
  const progress: Progress = {
    changes: [],
    warnings: [...provisionMismatches(desired), ...plan.warnings],
    errors: [],
  };
  await keepWarm(ctx, read, plan, now, progress);
  await launch(ctx, read, plan, now, progress);
  return finish(ctx, plan, now, progress);
}
