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

/** fleet-actions' provision's default `allowed-instance-types`. */
export const PROVISION_INSTANCE_TYPES: readonly string[] = ["c*", "m*", "r*"];

/** fleet-actions' provision's default `usage-class`. */
export const PROVISION_USAGE_CLASS: UsageClass = "on-demand";

/** The warm pool's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "warm-pool",
    env: ["REFRESH_WARM_POOL"],
    kind: "string",
    help:
      'idle instances kept ready per resource class, CLASS[:USAGE]=N[,…] (USAGE spot or on-demand, default --warm-pool-usage-class; config file: also {"CLASS": N}); none by default',
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
    default: "on-demand",
    help:
      "spot or on-demand: how warm instances are bought, unless CLASS:USAGE says (provision's usage-class, whose default is on-demand)",
  },
  {
    name: "warm-pool-instance-types",
    env: ["REFRESH_WARM_POOL_INSTANCE_TYPES"],
    kind: "list",
    default: PROVISION_INSTANCE_TYPES.join(","),
    help:
      "instance types warm instances may be, with the class's CPU and memory (provision's allowed-instance-types, patterns like c6i.*)",
  },
  {
    name: "warm-pool-spot-fallback",
    env: ["REFRESH_WARM_POOL_SPOT_FALLBACK"],
    kind: "string",
    default: "on",
    help:
      "on or off: when spot capacity is short, launch a spot warm pool's shortfall on-demand (and remember the shortage for 30 min)",
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
  /** Whether a spot warm pool short of capacity launches on-demand instead. */
  spotFallback: boolean;
}

/** A warm pool key (`large`, or `large:spot`) as the class and usage class it keeps. */
export interface WarmKey {
  cls: string;
  usage: UsageClass;
}

/** The class and usage class of a key of {@link DesiredWarmPool.minimum}. */
export function warmKey(key: string, defaultUsage: UsageClass): WarmKey {
  const [cls, usage] = key.split(":");
  return { cls, usage: usage === "spot" || usage === "on-demand" ? usage : defaultUsage };
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
  const usageClass = r.string("warm-pool-usage-class") ?? PROVISION_USAGE_CLASS;
  if (usageClass !== "spot" && usageClass !== "on-demand") {
    r.problems.push(
      `warm-pool-usage-class: expected spot or on-demand, got ${JSON.stringify(usageClass)}`,
    );
  }
  const instanceTypes = r.list("warm-pool-instance-types") ?? [...PROVISION_INSTANCE_TYPES];
  if (usageClass === "spot" || usageClass === "on-demand") {
    const seen = new Map<string, string>();
    for (const key of Object.keys(minimum)) {
      const { cls, usage } = warmKey(key, usageClass);
      const other = seen.get(`${cls}:${usage}`);
      if (other !== undefined) {
        r.problems.push(
          `warm-pool: ${other} and ${key} both keep ${usage} ${cls} instances; give one of them`,
        );
      }
      seen.set(`${cls}:${usage}`, key);
    }
  }
  const fallback = r.string("warm-pool-spot-fallback") ?? "on";
  if (fallback !== "on" && fallback !== "off") {
    r.problems.push(`warm-pool-spot-fallback: expected on or off, got ${JSON.stringify(fallback)}`);
  }
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
    spotFallback: fallback !== "off",
  };
}

/**
 * `large=2,xlarge=1` (commas or spaces), `large:spot=1` for a usage class other than the
 * default, or in the config file also `{"large": 2}`.
 */
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
    const [name_, usage, ...more] = cls.split(":");
    if (more.length > 0 || (usage !== undefined && usage !== "spot" && usage !== "on-demand")) {
      problems.push(
        `${name}: ${JSON.stringify(cls)} is not CLASS or CLASS:USAGE with USAGE spot or on-demand`,
      );
      continue;
    }
    if (classes && !(name_ in classes)) {
      problems.push(
        `${name}: unknown resource class ${JSON.stringify(name_)}; expected one of ${
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

/**
 * What keeps fleet-actions' provision, with its defaults, from claiming a key's warm instances:
 * a usage class other than its `usage-class` default (on-demand), or instance types outside its
 * `allowed-instance-types` default (c*, m*, r*); provision puts such instances back in the queue
 * and launches a new one.
 */
export function provisionMismatches(desired: DesiredWarmPool): string[] {
  const found: string[] = [];
  const outside = desired.instanceTypes.filter((t) => !/^[cmr]/.test(t));
  for (const key of Object.keys(desired.minimum)) {
    const { cls, usage } = warmKey(key, desired.usageClass);
    if (usage !== PROVISION_USAGE_CLASS) {
      found.push(
        `${key}: warm instances are ${usage}, and provision claims only its usage-class ` +
          `(default ${PROVISION_USAGE_CLASS}): workflows of class ${cls} must set usage-class: ` +
          `${usage}, or keep ${cls}=N (on-demand)`,
      );
    }
    if (outside.length > 0) {
      found.push(
        `${key}: warm instance types ${outside.join(", ")} are outside provision's default ` +
          `allowed-instance-types (${PROVISION_INSTANCE_TYPES.join(", ")}): workflows must list ` +
          "them in allowed-instance-types, or provision puts those instances back",
      );
    }
  }
  return found;
}
