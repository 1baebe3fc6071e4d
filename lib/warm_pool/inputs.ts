/**
 * The warm pool's inputs: `--warm-pool CLASS=N[,CLASS=N…]` (or a JSON object in the config
 * file), `--warm-pool-schedule` (lib/schedule.ts), the hold, the usage class and the allowed
 * instance types; the minimum per class at a moment, and what it costs. Reads nothing else.
 *
 * @module
 */
import { type InputSpec, type Reader, show } from "../inputs.ts";
import type { ResourceClass } from "../resource_pools.ts";
import { hoursPerWeek, isWithin, parseSchedule, type Schedule } from "../schedule.ts";

/** The warm pool's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "warm-pool",
    env: ["REFRESH_WARM_POOL"],
    kind: "string",
    help:
      'idle instances kept ready per resource class, CLASS=N[,CLASS=N…] (config file: also {"CLASS": N}); none by default',
  },
  {
    name: "warm-pool-schedule",
    env: ["REFRESH_WARM_POOL_SCHEDULE"],
    kind: "string",
    help:
      'when the warm pool is kept, windows "DAYS HH:MM-HH:MM [TIME_ZONE]" separated by ";" (default always); outside them the minimum is 0',
  },
  {
    name: "warm-pool-hold-min",
    env: ["REFRESH_WARM_POOL_HOLD_MIN"],
    kind: "int",
    default: "30",
    help:
      "minutes a run keeps a warm instance idle ahead (its threshold); longer than the interval between runs",
  },
  {
    name: "warm-pool-usage-class",
    env: ["REFRESH_WARM_POOL_USAGE_CLASS"],
    kind: "string",
    default: "spot",
    help: "spot or on-demand: how warm instances are bought (provision's usage class)",
  },
  {
    name: "warm-pool-instance-types",
    env: ["REFRESH_WARM_POOL_INSTANCE_TYPES"],
    kind: "list",
    help:
      "instance types warm instances may be (provision's allowed types, patterns like c6i.*); any with the class's CPU and memory by default",
  },
];

export type UsageClass = "spot" | "on-demand";

/** The warm pool's section of the desired state. */
export interface DesiredWarmPool {
  /** Instances kept ready per class; empty: no warm pool. */
  minimum: Record<string, number>;
  /** When the minimum applies; null: always. */
  schedule: Schedule | null;
  holdMin: number;
  usageClass: UsageClass;
  /** EC2 Fleet's AllowedInstanceTypes; empty: any type with the class's CPU and memory. */
  instanceTypes: string[];
}

/** The most instances one class may keep warm. */
export const MAX_WARM_PER_CLASS = 100;

/**
 * Reads the warm pool's inputs, recording problems on the reader. `classes` are the resource
 * classes of the desired state (undefined when they were invalid: then names are not checked).
 */
export function parseWarmPool(
  r: Reader,
  classes: Record<string, ResourceClass> | undefined,
): DesiredWarmPool {
  const minimum = parseMinimum(r.raw["warm-pool"], classes, r.problems);
  let schedule: Schedule | null = null;
  const scheduleText = r.string("warm-pool-schedule");
  if (scheduleText !== undefined) {
    const parsed = parseSchedule(scheduleText);
    if (Array.isArray(parsed)) r.problems.push(...parsed.map((p) => `warm-pool-schedule: ${p}`));
    else schedule = parsed;
    if (!r.has("warm-pool")) {
      r.problems.push(
        "warm-pool-schedule: given without --warm-pool; set the minimum per class it applies to",
      );
    }
  }
  const usageClass = r.string("warm-pool-usage-class") ?? "spot";
  if (usageClass !== "spot" && usageClass !== "on-demand") {
    r.problems.push(
      `warm-pool-usage-class: expected spot or on-demand, got ${JSON.stringify(usageClass)}`,
    );
  }
  const instanceTypes = r.list("warm-pool-instance-types") ?? [];
  for (const t of instanceTypes) {
    if (!/^[a-z0-9*.-]{1,30}$/.test(t)) {
      r.problems.push(
        `warm-pool-instance-types: ${
          JSON.stringify(t)
        } is not an instance type or pattern like c6i.large or m7i.*`,
      );
    }
  }
  return {
    minimum,
    schedule,
    holdMin: r.int("warm-pool-hold-min", 2, 24 * 60)!,
    usageClass: usageClass as UsageClass,
    instanceTypes,
  };
}

/** `large=2,xlarge=1` (commas or spaces), or in the config file also `{"large": 2}`. */
function parseMinimum(
  raw: unknown,
  classes: Record<string, ResourceClass> | undefined,
  problems: string[],
): Record<string, number> {
  const name = "warm-pool";
  const pairs: [string, unknown][] = [];
  if (raw === undefined) return {};
  if (typeof raw === "string") {
    for (const part of raw.split(/[\s,]+/).filter(Boolean)) {
      const m = /^([^=]+)=(.*)$/.exec(part);
      if (!m) {
        problems.push(`${name}: ${JSON.stringify(part)} is not CLASS=N (like large=2)`);
        continue;
      }
      pairs.push([m[1], m[2]]);
    }
    if (pairs.length === 0 && !problems.some((p) => p.startsWith(`${name}:`))) {
      problems.push(`${name}: expected CLASS=N[,CLASS=N…] (like large=2), got ${show(raw)}`);
    }
  } else if (typeof raw === "object" && raw !== null && !Array.isArray(raw)) {
    pairs.push(...Object.entries(raw));
  } else {
    problems.push(
      `${name}: expected CLASS=N[,CLASS=N…] or a JSON object {"CLASS": N}, got ${show(raw)}`,
    );
    return {};
  }
  const minimum: Record<string, number> = {};
  for (const [cls, value] of pairs) {
    const n = typeof value === "number"
      ? value
      : typeof value === "string" && /^\d+$/.test(value.trim())
      ? Number(value)
      : NaN;
    if (!Number.isSafeInteger(n) || n < 0 || n > MAX_WARM_PER_CLASS) {
      problems.push(
        `${name}: ${cls}=${
          typeof value === "string" ? value : show(value)
        } is not a whole number 0-${MAX_WARM_PER_CLASS}`,
      );
      continue;
    }
    if (classes && !(cls in classes)) {
      problems.push(
        `${name}: unknown resource class ${JSON.stringify(cls)}; expected one of ${
          Object.keys(classes).join(", ")
        } (--resource-class-config)`,
      );
      continue;
    }
    if (cls in minimum) {
      problems.push(`${name}: class ${JSON.stringify(cls)} is given more than once`);
      continue;
    }
    minimum[cls] = n;
  }
  return minimum;
}

/** Each class's minimum at `now`: as configured inside the schedule (or with none), else 0. */
export function minimumsAt(desired: DesiredWarmPool, now: Date): Record<string, number> {
  const inside = desired.schedule === null || isWithin(desired.schedule, now);
  return Object.fromEntries(
    Object.entries(desired.minimum).map(([cls, n]) => [cls, inside ? n : 0]),
  );
}

/** Instance-hours per day a class's minimum costs at most, averaged over a week. */
export function instanceHoursPerDay(minimum: number, schedule: Schedule | null): number {
  const hours = schedule === null ? 24 : hoursPerWeek(schedule) / 7;
  return Math.round(minimum * hours * 10) / 10;
}
