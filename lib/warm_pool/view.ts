/**
 * The warm pool's outcome and view (`found.warm`): per class minimum, ready, booting, launched,
 * and how the reports render it. Writes nothing.
 *
 * @module
 */
import { isWithin } from "../schedule.ts";
import type { TaskOutcome } from "../task.ts";
import { instanceHoursPerDay } from "./inputs.ts";
import type { Progress, WarmContext } from "./context.ts";
import type { WarmPlan } from "./plan.ts";

/** One warm pool key (a class, bought one way) as the reports show it. */
export interface WarmClassView {
  /** The resource class. */
  resourceClass: string;
  /** spot or on-demand: how its warm instances are bought (provision's usage-class). */
  usageClass: string;
  minimum: number;
  ready: number;
  booting: number;
  launched: number;
  outdated: number;
  unhealthy: number;
  extra: number;
  /** The configured minimum's instance-hours per day (averaged over a week), for the cost. */
  instanceHoursPerDay: number;
  /** Idle instances that withdrew on a spot interruption notice or rebalance recommendation. */
  interrupted: number;
  /** Launched on-demand this run in place of spot (capacity short), and EC2's reason. */
  fellBack: { count: number; why: string } | null;
  /** Whether spot capacity is short (remembered): the shortfall goes on-demand. */
  capacityShort: boolean;
  /** Whether ready, booting and launched together are fewer than the minimum. */
  belowMinimum: boolean;
}

/** The warm pool view (`found.warm`). */
export interface WarmView {
  schedule: string | null;
  inSchedule: boolean;
  classes: Record<string, WarmClassView>;
}

export function finish(
  ctx: WarmContext,
  plan: WarmPlan,
  now: Date,
  progress: Progress,
): TaskOutcome {
  const desired = ctx.desired.warmPool;
  const view: WarmView = {
    schedule: desired.schedule?.text ?? null,
    inSchedule: desired.schedule === null || isWithin(desired.schedule, now),
    classes: Object.fromEntries(
      Object.entries(plan.classes).map(([key, c]) => [key, {
        resourceClass: c.cls,
        usageClass: c.usage,
        minimum: c.minimum,
        ready: c.ready,
        booting: c.booting,
        launched: ctx.dryRun ? c.launch : c.launched,
        outdated: c.outdated,
        unhealthy: c.unhealthy,
        extra: c.extra,
        instanceHoursPerDay: instanceHoursPerDay(desired.minimum[key], desired.schedule),
        interrupted: c.interrupted,
        fellBack: c.fellBack,
        capacityShort: c.short || c.fellBack !== null,
        belowMinimum: Math.min(c.kept.length, c.minimum) + c.booting +
            (ctx.dryRun ? c.launch : c.launched) < c.minimum,
      }]),
    ),
  };
  const kept = progress.changes.filter((c) => c.action === "keep warm").length;
  const launched = Object.values(view.classes).reduce((n, c) => n + c.launched, 0);
  const would = ctx.dryRun ? "would be " : "";
  const parts = [
    kept && `${kept} kept warm${ctx.dryRun ? " (planned)" : ""}`,
    launched && `${launched} ${would}launched`,
    !view.inSchedule && "outside the schedule: minimum 0",
  ].filter(Boolean);
  const ready = Object.values(view.classes).reduce((n, c) => n + c.ready, 0);
  const summary = parts.length
    ? parts.join(", ")
    : `warm: ${ready} ready, nothing to do${view.inSchedule ? "" : " (outside the schedule)"}`;
  if (progress.errors.length) {
    const more = progress.errors.length > 3 ? ` (and ${progress.errors.length - 3} more)` : "";
    throw new Error(
      `${summary}; ${progress.errors.length} operations failed: ${
        progress.errors.slice(0, 3).join("; ")
      }${more}`,
    );
  }
  return { summary, found: { warm: view }, changes: progress.changes, warnings: progress.warnings };
}

/** Whether a task's `found.warm` is a warm pool view (the reports render it as a table). */
export function isWarmView(value: unknown): value is WarmView {
  return typeof value === "object" && value !== null && "classes" in value &&
    "inSchedule" in value;
}

/** The warm pool view as table rows: a header, then one row per class. */
export function warmTable(view: WarmView): string[][] {
  const header = [
    "class",
    "usage",
    "minimum",
    "ready",
    "booting",
    "launched",
    "outdated",
    "interrupted",
    "h/day",
  ];
  const rows = Object.entries(view.classes).map(([name, c]) => [
    name + (c.belowMinimum ? " (below minimum)" : ""),
    c.usageClass + (c.fellBack ? ` (${c.fellBack.count} on-demand: capacity short)` : ""),
    String(c.minimum),
    String(c.ready),
    String(c.booting),
    String(c.launched),
    String(c.outdated),
    String(c.interrupted),
    String(c.instanceHoursPerDay),
  ]);
  return [header, ...rows];
}

/** What the warm pool view is about, in words. */
export function warmLine(view: WarmView): string {
  return view.schedule === null
    ? "warm pool, always kept"
    : `warm pool, schedule ${view.schedule}: ${view.inSchedule ? "inside" : "outside (minimum 0)"}`;
}
