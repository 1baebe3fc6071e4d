/**
 * Rollout and pool health: decides which idle instances of the pool to drain, and describes the
 * pool per resource class. A pure function of what the reaper read; it calls nothing and writes
 * nothing. The reaper writes: it locks each drained instance with a condition proving it is still
 * idle and unclaimed (state, runId and threshold unchanged since the read), then terminates it
 * and deletes its artifacts like any reaped instance.
 *
 * Drained (idle instances only, never claimed, running or created ones):
 *
 * - **unhealthy** ones, all of them (they cannot serve a job, so draining them takes no capacity):
 *   a worker signal `*_FAILED` (the bootstrap stops after one, PROTOCOL.md), a heartbeat older
 *   than the staleness limit, or no heartbeat at all once the boot grace period since launch is
 *   over (younger ones are still booting and left alone);
 * - **outdated** ones, launched from another version than the template's default: at most
 *   `maxPerRun` per resource class and run (a number, or a percentage of the class's idle
 *   instances that can serve, rounded up), oldest launch first. `0` turns this off.
 *
 * ## Which template version an instance runs
 *
 * What EC2 records, and what this relies on:
 *
 * - AWS, EC2 User Guide, "Launch instances from a launch template": "Instances that are launched
 *   using a launch template are automatically assigned two tags with the keys
 *   `aws:ec2launchtemplate:id` and `aws:ec2launchtemplate:version`. You cannot remove or edit
 *   these tags." The version tag holds the number the launch resolved, never `$Default` or
 *   `$Latest` (instances in the field show `"1"`, `"26"`), so an instance launched with version
 *   `$Default` records the default of that moment. The `aws:` prefix is reserved: no user, and so
 *   no job on a runner, can write or change these tags.
 * - `CreateFleet` (fleet-actions' provision: type `instant`, version `$Default`, instance tags of
 *   its own in the request): launches from a launch template too, so the same two tags apply, and
 *   EC2 adds `aws:ec2:fleet-id`. The CreateFleet reference says an `instant` fleet may tag
 *   instances through `TagSpecifications` (resource type `instance`); fleet instances observed in
 *   the wild carry the template tags, `aws:ec2:fleet-id` and the request's tags together. The
 *   fleet id is not used here: it names the launch, not the template version.
 * - Fallback, for an instance without the two tags (launched without a template, or by an
 *   emulator that does not stamp them): its image id, compared with the default version's AMI.
 *   That tells a changed AMI apart, nothing else (user data, instance profile…), and the report
 *   says which instances were judged that way. An instance with neither is `unknown`, never
 *   drained.
 * - moto 5.2.5 stamps the two tags on `RunInstances` with a template (ec2/models/instances.py) but
 *   not on `CreateFleet` (ec2/models/fleets.py launches through run_instances without the
 *   template, and adds no `aws:ec2:fleet-id` either); test/support/moto_server.py adds them to
 *   CreateFleet as EC2 does, so tests launch as provision does.
 *
 * A template version is compared by number: an instance is current when its template is the
 * pool's and its version is the default one (a default moved back to an older version drains the
 * newer instances too). An instance launched from another template id (the template was deleted
 * and recreated) is outdated.
 *
 * @module
 */
import type { InstanceState } from "./contract.ts";

/** Tags EC2 itself stamps on every instance launched from a launch template. */
export const TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id";
export const TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version";

/** How many outdated idle instances a run may drain per resource class. */
export type MaxPerRun = { count: number } | { percent: number };

/** The planner's inputs (the reaper owns their flags). */
export interface RolloutInputs {
  /** Outdated idle instances drained per class and run; `{ count: 0 }` turns rollout off. */
  maxPerRun: MaxPerRun;
  /** A heartbeat older than this many seconds is stale; 0 turns the heartbeat check off. */
  heartbeatStaleSec: number;
  /** Minutes after launch an instance may go without any heartbeat (it is still booting). */
  bootGraceMin: number;
}

/** The template's default version, as EC2 describes it. */
export interface TemplateDefault {
  id: string;
  version: number;
  ami: string;
}

/** A record of the pool, as read (live states only matter here). */
export interface RecordRow {
  id: string;
  state: InstanceState | string;
  threshold?: string;
  runId?: string;
  resourceClass?: string;
}

/** A pool instance as EC2 describes it (alive, carrying the pool's ownership proof). */
export interface PoolInstance {
  id: string;
  /** ISO-8601 UTC without fractional seconds. */
  launchTime?: string;
  imageId?: string;
  tags: Record<string, string>;
}

/** A heartbeat item: when the instance last wrote it. */
export interface Heartbeat {
  id: string;
  updatedAt?: string;
}

/** A worker-signal item. */
export interface WorkerSignal {
  id: string;
  state?: string;
  runId?: string;
  updatedAt?: string;
}

/** What the planner is given. */
export interface PoolReading {
  records: RecordRow[];
  /** The pool's instances alive in EC2, by id. */
  instances: Map<string, PoolInstance>;
  heartbeats: Map<string, Heartbeat>;
  signals: Map<string, WorkerSignal>;
  /** The default version, or null when there is no template to compare with. */
  template: TemplateDefault | null;
  /** Ids the reaper already takes this run (expired, vanished): never planned twice. */
  taken: Set<string>;
  now: Date;
}

export type DrainKind = "failed-signal" | "stale-heartbeat" | "no-heartbeat" | "outdated";

/** An idle instance to drain: the lock's condition values and why. */
export interface Drain {
  id: string;
  resourceClass: string;
  kind: DrainKind;
  detail: string;
  /** As read: the lock requires all three unchanged. */
  state: string;
  threshold: string;
  runId: string | undefined;
}

/** One resource class of the pool view. */
export interface ClassView {
  idle: number;
  claimed: number;
  running: number;
  created: number;
  /** Live instances launched from the default version (or, without tags, its AMI). */
  current: number;
  outdated: number;
  /** Neither tags nor image to judge by, or not among the pool's tagged instances. */
  unknownVersion: number;
  /** Idle instances that cannot serve (failed signal, stale or missing heartbeat). */
  unhealthy: number;
  /** Idle instances with no heartbeat yet, within the boot grace period. */
  booting: number;
  /** Outdated idle instances left for later runs by the per-run limit. */
  deferred: number;
  /** Launch time of the class's oldest live instance, and its age in minutes. */
  oldestLaunch: string | null;
  oldestAgeMin: number | null;
}

export interface PoolView {
  template: TemplateDefault | null;
  classes: Record<string, ClassView>;
}

export interface RolloutPlan {
  /** Unhealthy ones first, then outdated ones oldest first, per class in name order. */
  drains: Drain[];
  view: PoolView;
  warnings: string[];
}

/** The class name records without a `resourceClass` are counted under. */
export const NO_CLASS = "(none)";

const STATES = ["idle", "claimed", "running", "created"] as const;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

/**
 * Whether a value is a UTC timestamp as the table stores them (`2025-04-24T18:31:04Z`; fractional
 * seconds tolerated); times are then compared as numbers, never as text.
 */
export function isTimestamp(value: unknown): value is string {
  return typeof value === "string" && TIMESTAMP.test(value) && !isNaN(Date.parse(value));
}

/**
 * Parses `--rollout-max-per-run`: a whole number (`3`) or a whole percentage (`25%`, 0-100).
 * Returns an error text (the offending value and what is expected) when it is neither.
 */
export function parseMaxPerRun(text: string): MaxPerRun | string {
  const value = text.trim();
  const percent = /^(\d{1,3})\s*%$/.exec(value);
  if (percent && Number(percent[1]) <= 100) return { percent: Number(percent[1]) };
  if (/^\d{1,9}$/.test(value)) return { count: Number(value) };
  return `expected a whole number >= 0 or a percentage 0%-100% (like 25%), got ${
    JSON.stringify(text)
  }`;
}

/** The limit of one class: how many outdated instances it may drain out of `serving` idle ones. */
export function limitFor(max: MaxPerRun, serving: number): number {
  if ("count" in max) return max.count;
  return Math.ceil((serving * max.percent) / 100);
}

export type VersionVerdict =
  | { kind: "current"; by: "tag" | "image" }
  | { kind: "outdated"; by: "tag" | "image"; detail: string }
  | { kind: "unknown"; detail: string };

/** Which version an instance runs relative to the template's default (see the module doc). */
export function versionOf(instance: PoolInstance, template: TemplateDefault): VersionVerdict {
  const templateId = instance.tags[TEMPLATE_ID_TAG];
  const versionTag = instance.tags[TEMPLATE_VERSION_TAG];
  if (templateId !== undefined && versionTag !== undefined) {
    if (templateId !== template.id) {
      return {
        kind: "outdated",
        by: "tag",
        detail: `launched from template ${templateId} version ${versionTag}, not ${template.id}`,
      };
    }
    if (!/^\d+$/.test(versionTag)) {
      return { kind: "unknown", detail: `version tag ${JSON.stringify(versionTag)}` };
    }
    if (Number(versionTag) === template.version) return { kind: "current", by: "tag" };
    return {
      kind: "outdated",
      by: "tag",
      detail: `launched from version ${versionTag}, the default is ${template.version}`,
    };
  }
  if (instance.imageId) {
    if (instance.imageId === template.ami) return { kind: "current", by: "image" };
    return {
      kind: "outdated",
      by: "image",
      detail:
        `runs ${instance.imageId}, the default version ${template.version} has ${template.ami}` +
        " (no launch template tags: judged by image)",
    };
  }
  return { kind: "unknown", detail: "no launch template tags and no image id" };
}

type Health =
  | { kind: "healthy" }
  | { kind: "booting" }
  | { kind: "unknown"; warning: string }
  | { kind: Exclude<DrainKind, "outdated">; detail: string };

/** Whether an idle instance can serve a job, from its signal, heartbeat and launch time. */
export function healthOf(
  instance: PoolInstance,
  heartbeat: Heartbeat | undefined,
  signal: WorkerSignal | undefined,
  inputs: RolloutInputs,
  now: Date,
): Health {
  if (typeof signal?.state === "string" && signal.state.endsWith("_FAILED")) {
    const run = signal.runId ? ` for run ${signal.runId}` : "";
    const at = signal.updatedAt ? ` at ${signal.updatedAt}` : "";
    return { kind: "failed-signal", detail: `worker signal ${signal.state}${run}${at}` };
  }
  if (inputs.heartbeatStaleSec === 0) return { kind: "healthy" };
  if (heartbeat) {
    if (!isTimestamp(heartbeat.updatedAt)) {
      return {
        kind: "unknown",
        warning: `heartbeat of ${instance.id} has updatedAt ${
          JSON.stringify(heartbeat.updatedAt)
        }; expected a timestamp like 2025-04-24T18:31:04Z, so its health is not judged`,
      };
    }
    if (Date.parse(heartbeat.updatedAt) < now.getTime() - inputs.heartbeatStaleSec * 1000) {
      return {
        kind: "stale-heartbeat",
        detail:
          `last heartbeat at ${heartbeat.updatedAt}, more than ${inputs.heartbeatStaleSec} s ago`,
      };
    }
    return { kind: "healthy" };
  }
  const grace = now.getTime() - inputs.bootGraceMin * 60_000;
  if (!isTimestamp(instance.launchTime) || Date.parse(instance.launchTime) >= grace) {
    return { kind: "booting" };
  }
  return {
    kind: "no-heartbeat",
    detail:
      `no heartbeat since launch at ${instance.launchTime}, more than ${inputs.bootGraceMin} min ago`,
  };
}

function emptyClass(): ClassView {
  return {
    idle: 0,
    claimed: 0,
    running: 0,
    created: 0,
    current: 0,
    outdated: 0,
    unknownVersion: 0,
    unhealthy: 0,
    booting: 0,
    deferred: 0,
    oldestLaunch: null,
    oldestAgeMin: null,
  };
}

/** Plans the drains and builds the pool view: see the module documentation. */
export function planRollout(reading: PoolReading, inputs: RolloutInputs): RolloutPlan {
  const { now, template } = reading;
  const classes = new Map<string, ClassView>();
  const warnings: string[] = [];
  const unhealthy: Drain[] = [];
  const outdated = new Map<string, { drain: Drain; launched: number }[]>();
  const serving = new Map<string, number>();

  for (const record of reading.records) {
    if (!(STATES as readonly string[]).includes(record.state)) continue;
    const name = record.resourceClass || NO_CLASS;
    const view = classes.get(name) ?? emptyClass();
    classes.set(name, view);
    view[record.state as typeof STATES[number]]++;
    const instance = reading.instances.get(record.id);
    if (!instance) {
      view.unknownVersion++;
      continue;
    }
    if (isTimestamp(instance.launchTime)) {
      if (
        view.oldestLaunch === null ||
        Date.parse(instance.launchTime) < Date.parse(view.oldestLaunch)
      ) {
        view.oldestLaunch = instance.launchTime;
      }
    }
    const version = template ? versionOf(instance, template) : undefined;
    if (version?.kind === "current") view.current++;
    else if (version?.kind === "outdated") view.outdated++;
    else view.unknownVersion++;

    if (record.state !== "idle" || reading.taken.has(record.id)) continue;
    const drain = (kind: DrainKind, detail: string): Drain => ({
      id: record.id,
      resourceClass: name,
      kind,
      detail,
      state: record.state,
      threshold: record.threshold ?? "",
      runId: record.runId,
    });
    const health = healthOf(
      instance,
      reading.heartbeats.get(record.id),
      reading.signals.get(record.id),
      inputs,
      now,
    );
    if (health.kind === "unknown") warnings.push(health.warning);
    if (health.kind === "booting") view.booting++;
    if (health.kind === "healthy" || health.kind === "booting" || health.kind === "unknown") {
      serving.set(name, (serving.get(name) ?? 0) + 1);
      if (version?.kind === "outdated") {
        const list = outdated.get(name) ?? [];
        list.push({
          drain: drain("outdated", version.detail),
          launched: Date.parse(instance.launchTime ?? "") || 0,
        });
        outdated.set(name, list);
      }
      continue;
    }
    view.unhealthy++;
    unhealthy.push(drain(health.kind, health.detail));
  }

  for (const view of classes.values()) {
    if (view.oldestLaunch !== null) {
      view.oldestAgeMin = Math.max(
        0,
        Math.floor((now.getTime() - Date.parse(view.oldestLaunch)) / 60_000),
      );
    }
  }

  const rollout: Drain[] = [];
  for (const name of [...outdated.keys()].sort()) {
    const list = outdated.get(name)!;
    // Oldest launch first; the id breaks ties so the plan is stable.
    list.sort((a, b) => a.launched - b.launched || a.drain.id.localeCompare(b.drain.id));
    const limit = limitFor(inputs.maxPerRun, serving.get(name) ?? 0);
    rollout.push(...list.slice(0, limit).map((o) => o.drain));
    classes.get(name)!.deferred = Math.max(0, list.length - limit);
  }
  unhealthy.sort((a, b) =>
    a.resourceClass.localeCompare(b.resourceClass) || a.id.localeCompare(b.id)
  );

  const view: PoolView = {
    template,
    classes: Object.fromEntries([...classes].sort(([a], [b]) => a.localeCompare(b))),
  };
  return { drains: [...unhealthy, ...rollout], view, warnings };
}

/** Whether a task's `found.pool` is a pool view (the reports render it as a table). */
export function isPoolView(value: unknown): value is PoolView {
  return typeof value === "object" && value !== null && "classes" in value &&
    "template" in value && typeof (value as PoolView).classes === "object";
}

/** What the pool view compares with, in words: `lt-… version 2 (ami-…)`, or why nothing. */
export function templateLine(view: PoolView): string {
  const t = view.template;
  return t
    ? `launch template ${t.id} default version ${t.version} (${t.ami})`
    : "no launch template found: versions not judged";
}

/** The pool view as table rows: a header, then one row per class. */
export function poolTable(view: PoolView): string[][] {
  const header = [
    "class",
    "idle",
    "claimed",
    "running",
    "created",
    "current",
    "outdated",
    "unknown",
    "unhealthy",
    "booting",
    "oldest",
  ];
  const age = (min: number | null) =>
    min === null
      ? "-"
      : min < 120
      ? `${min} min`
      : min < 2880
      ? `${Math.floor(min / 60)} h`
      : `${Math.floor(min / 1440)} d`;
  const rows = Object.entries(view.classes).map(([name, c]) => [
    name,
    String(c.idle),
    String(c.claimed),
    String(c.running),
    String(c.created),
    String(c.current),
    c.deferred ? `${c.outdated} (${c.deferred} left)` : String(c.outdated),
    String(c.unknownVersion),
    String(c.unhealthy),
    String(c.booting),
    age(c.oldestAgeMin),
  ]);
  return [header, ...rows];
}
