/**
 * Phase 2 of the warm pool: pure. Sorts the idle instances of each warm pool key (a class, bought
 * spot or on-demand) into ready, booting and unable to serve, picks the ones to keep warm and
 * renew, and the shortfall to launch. An idle instance that withdrew on an interruption notice
 * (its record's `interruption`) is counted as interrupted, never as warm.
 *
 * @module
 */
import { isTimestamp, versionOf } from "../rollout.ts";
import type { WarmState } from "./read.ts";
import { type UsageClass, warmKey } from "./inputs.ts";

/** A heartbeat at most this old counts as fresh (provision's claim accepts 15 s). */
export const READY_HEARTBEAT_SEC = 15;
/** Signals after which an idle instance waits for a claim. */
const READY_SIGNALS = new Set(["UD_OK", "UD_REMOVE_REG_REMOVE_RUN_OK"]);

/** An idle, unclaimed instance that can take a claim now. */
export interface ReadyInstance {
  id: string;
  resourceClass: string;
  /** As read: the keep-alive's condition requires both unchanged. */
  threshold: string;
  updatedAt: string | undefined;
  advertised: boolean;
  outdated: boolean;
  launchTime: string;
  instanceType: string;
  usageClass: string;
}

/** One warm pool key (a class, bought one way) of the plan: what was found and what this run does. */
export interface WarmClass {
  /** The resource class. */
  cls: string;
  /** How its warm instances are bought. */
  usage: UsageClass;
  /** The minimum now (0 outside the schedule). */
  minimum: number;
  /** Ready idle instances found (kept or not). */
  ready: number;
  booting: number;
  /** Of the ready ones, launched from another template version than the default. */
  outdated: number;
  /** Idle instances that cannot serve: a failed signal, or silent past the boot grace. */
  unhealthy: number;
  /** Ready instances kept (up to the minimum). */
  kept: ReadyInstance[];
  /** Of those, the ones whose threshold is renewed and advertised this run. */
  renew: ReadyInstance[];
  /** Ready instances above the minimum, left to expire. */
  extra: number;
  /** Instances to launch. */
  launch: number;
  /** Instances launched (and recorded) this run. */
  launched: number;
  /**
   * Spot capacity is short (remembered from an earlier run, or met by this one): the shortfall
   * is launched on-demand, and on-demand instances launched in its place count as warm.
   */
  short: boolean;
  /** Instances launched on-demand this run in place of spot ones, and why. */
  fellBack: { count: number; why: string } | null;
  /** Idle instances of the class that withdrew on an interruption notice, not reaped yet. */
  interrupted: number;
}

export interface WarmPlan {
  classes: Record<string, WarmClass>;
  warnings: string[];
}

export interface PlanInput extends Omit<WarmState, "classConfig" | "subnetIds" | "shortages"> {
  minimum: Record<string, number>;
  /** The usage class of a key without one (`--warm-pool-usage-class`). */
  usageClass: UsageClass;
  /** Keys whose spot capacity is short now (a remembered shortage not yet over). */
  short: Set<string>;
  now: Date;
  holdMs: number;
  bootGraceMin: number;
}

/** Phase 2: see the module documentation. */
export function planWarmPool(input: PlanInput): WarmPlan {
  const { now } = input;
  const classes: Record<string, WarmClass> = {};
  const ready = new Map<string, ReadyInstance[]>();
  /** Key by `<class>:<usage>`, and by `<class>:fallback` for a short spot key. */
  const keys = new Map<string, string>();
  for (const [key, minimum] of Object.entries(input.minimum)) {
    const { cls, usage } = warmKey(key, input.usageClass);
    const short = usage === "spot" && input.short.has(key);
    keys.set(`${cls}:${usage}`, key);
    if (short) keys.set(`${cls}:fallback`, key);
    classes[key] = {
      cls,
      usage,
      short,
      fellBack: null,
      interrupted: 0,
      minimum,
      ready: 0,
      booting: 0,
      outdated: 0,
      unhealthy: 0,
      kept: [],
      renew: [],
      extra: 0,
      launch: 0,
      launched: 0,
    };
    ready.set(key, []);
  }
  const warnings: string[] = [];
  for (const r of input.records) {
    // On-demand instances launched in place of spot ones count for their spot key while the
    // shortage lasts; after it, they are left to expire and spot ones launched again.
    const usage = r.fallbackFrom === "spot" ? "fallback" : r.usageClass;
    const key = keys.get(`${r.resourceClass}:${usage}`);
    const view = key !== undefined ? classes[key] : undefined;
    if (!view || r.state !== "idle" || r.runId !== "") continue;
    // Withdrawn (its record expired at once): interrupted until the reaper ends it.
    if (typeof r.interruption === "string") {
      if (input.instances.has(r.id)) view.interrupted++;
      continue;
    }
    if (!isTimestamp(r.threshold) || Date.parse(r.threshold) <= now.getTime()) continue;
    const instance = input.instances.get(r.id);
    if (!instance) continue; // gone, or not proven the pool's: the reaper's to judge
    const signal = input.signals.get(r.id);
    if (typeof signal === "string" && signal.endsWith("_FAILED")) {
      view.unhealthy++;
      continue;
    }
    const beat = input.heartbeats.get(r.id);
    const fresh = isTimestamp(beat) &&
      Date.parse(beat) >= now.getTime() - READY_HEARTBEAT_SEC * 1000;
    if (fresh && typeof signal === "string" && READY_SIGNALS.has(signal)) {
      const version = input.template ? versionOf({ id: r.id, ...instance }, input.template) : null;
      ready.get(key!)!.push({
        id: r.id,
        resourceClass: view.cls,
        threshold: r.threshold,
        updatedAt: typeof r.updatedAt === "string" ? r.updatedAt : undefined,
        advertised: r.advertisedThreshold === r.threshold,
        outdated: version?.kind === "outdated",
        launchTime: instance.launchTime ?? "",
        instanceType: typeof r.instanceType === "string" ? r.instanceType : "",
        usageClass: typeof r.usageClass === "string" ? r.usageClass : "",
      });
      continue;
    }
    // Alive and not ready yet: booting, or just released and still removing its runner (a
    // fresh heartbeat); silent past the boot grace, it cannot serve (the reaper drains it).
    const launched = instance.launchTime ? Date.parse(instance.launchTime) : NaN;
    if (fresh || !(launched < now.getTime() - input.bootGraceMin * 60_000)) view.booting++;
    else view.unhealthy++;
  }
  for (const [key, view] of Object.entries(classes)) {
    const list = ready.get(key)!;
    // Current versions first, then the newest launches (they live longest), the id breaking ties.
    list.sort((a, b) =>
      Number(a.outdated) - Number(b.outdated) || b.launchTime.localeCompare(a.launchTime) ||
      a.id.localeCompare(b.id)
    );
    view.ready = list.length;
    view.outdated = list.filter((i) => i.outdated).length;
    view.kept = list.slice(0, view.minimum);
    view.extra = list.length - view.kept.length;
    view.renew = view.kept.filter((i) =>
      !i.advertised || Date.parse(i.threshold) - now.getTime() <= input.holdMs / 2
    );
    view.launch = Math.max(0, view.minimum - view.kept.length - view.booting);
  }
  return { classes, warnings };
}
