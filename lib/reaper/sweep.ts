/**
 * When the reaper lists the whole pool (a **sweep**) and when it reads only the instances it acts
 * on (a **targeted** run), and the item that remembers the last sweep.
 *
 * A targeted run describes by id only: live records past their threshold, terminated records
 * (a crash between lock and expunge), live records whose heartbeat is stale or missing or whose
 * worker signal failed (unhealthy, or gone: a reclaimed spot instance), and, while a rollout is
 * in progress, the idle records (the drain candidates). What only a full listing can find waits
 * for the next sweep: pool instances without a record (orphans) and a complete pool view. A
 * sweep is due when none is remembered, when the last one is older than the sweep interval (half
 * the orphan grace, at least {@link MIN_SWEEP_INTERVAL_MIN} minutes: an orphan launched just after
 * a sweep is terminated within its grace plus one sweep interval and the time to the next run),
 * when the run's template default version differs from the one the last sweep saw, when the last
 * sweep found idle instances of another version (a rollout in progress is then targeted by its
 * idle records, and each sweep re-judges it), when the table holds far more live records than the
 * last sweep saw instances (see {@link sweepDue}), or when `--sweep always` asks for one every
 * run.
 *
 * Writes: one PutItem of {@link SWEEP_KEY} after a sweep (not under dry-run); reads: one GetItem.
 *
 * @module
 */
import {
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { timestamp } from "../contract.ts";

/**
 * Seconds without a heartbeat after which a targeted run asks EC2 about a live record's instance
 * (a heartbeat comes every 5 s): a reclaimed or crashed instance is found within a minute.
 */
export const SILENT_SEC = 60;

/** The least time between two sweeps. */
export const MIN_SWEEP_INTERVAL_MIN = 5;

/** Where the last sweep is remembered: an item only refresh reads (see the data contract). */
export const SWEEP_KEY = { PK: "TYPE#REFRESH", SK: "ID#pool_sweep" } as const;

/** What the last sweep saw. */
export interface SweepMemory {
  /** When it ran (ISO-8601 UTC, whole seconds). */
  at: string;
  /** Pool instances alive then. */
  alive: number;
  /** The template's default version then (0: none). */
  templateVersion: number;
  /** Idle instances of another template version then (a rollout in progress). */
  outdatedIdle: number;
}

/** The sweep interval for an orphan grace: half of it, at least {@link MIN_SWEEP_INTERVAL_MIN}. */
export function sweepIntervalMin(orphanGraceMin: number): number {
  return Math.max(MIN_SWEEP_INTERVAL_MIN, Math.floor(orphanGraceMin / 2));
}

/** Why a sweep is due now, or undefined: a targeted run. */
export function sweepDue(input: {
  mode: "auto" | "always";
  memory: SweepMemory | undefined;
  now: Date;
  intervalMin: number;
  /** The template's default version this run (0: none, or not known). */
  templateVersion: number;
  /** Live instance records this run. */
  liveRecords: number;
}): string | undefined {
  const { memory } = input;
  if (input.mode === "always") return "--sweep always";
  if (memory === undefined) return "no sweep remembered";
  const age = input.now.getTime() - Date.parse(memory.at);
  if (!(age < input.intervalMin * 60_000)) {
    return `the last sweep (${memory.at}) is older than the sweep interval (${input.intervalMin} min)`;
  }
  if (input.templateVersion !== memory.templateVersion) {
    return `the template's default version is ${input.templateVersion}, the last sweep saw ${memory.templateVersion}`;
  }
  // Records only provision and the warm pool add: far more live records than instances the
  // last sweep saw means the table and EC2 disagree (a record count a listing should check).
  if (input.liveRecords > 2 * memory.alive + 100) {
    return `${input.liveRecords} live records, while the last sweep saw ${memory.alive} instances`;
  }
  return undefined;
}

/** The last sweep, or undefined when none is remembered (or the item is not one). */
export async function readSweep(
  ddb: DynamoDBDocumentClient,
  table: string,
): Promise<SweepMemory | undefined> {
  const out = await ddb.send(new GetCommand({ TableName: table, Key: SWEEP_KEY }));
  const value = out.Item?.value as Partial<SweepMemory> | undefined;
  if (typeof value !== "object" || value === null || typeof value.at !== "string") return undefined;
  if (Number.isNaN(Date.parse(value.at))) return undefined;
  const number = (n: unknown) => typeof n === "number" && Number.isFinite(n) ? n : 0;
  return {
    at: value.at,
    alive: number(value.alive),
    templateVersion: number(value.templateVersion),
    outdatedIdle: number(value.outdatedIdle),
  };
}

/** Remembers a sweep (one PutItem). */
export async function writeSweep(
  ddb: DynamoDBDocumentClient,
  table: string,
  memory: SweepMemory,
  now: Date,
): Promise<void> {
  await ddb.send(
    new PutCommand({
      TableName: table,
      Item: {
        ...SWEEP_KEY,
        entityType: "REFRESH",
        identifier: "pool_sweep",
        updatedAt: timestamp(now),
        value: memory,
      },
    }),
  );
}

/**
 * The targets the instance records alone name, looked up while the heartbeats and worker signals
 * are still being read: `reap`, records past their threshold or already `terminated`, reaped
 * whatever their instance's image or tags (their proofs are all EC2 is asked, lib/reaper/proof.ts);
 * `idle`, the other idle records during a rollout (drain candidates, described in full).
 */
export function recordTargets(input: {
  records: { id: string; state: unknown; threshold?: unknown }[];
  now: number;
  rolloutInProgress: boolean;
}): { reap: string[]; idle: string[] } {
  const alone = { ...input, artifacts: [], silentToo: false };
  const reap = targetIds({ ...alone, rolloutInProgress: false });
  const reaping = new Set(reap);
  const idle = input.rolloutInProgress ? targetIds(alone).filter((id) => !reaping.has(id)) : [];
  return { reap, idle };
}

/**
 * The instances a targeted run describes: records past their threshold, terminated records,
 * live records with no heartbeat for {@link SILENT_SEC} or a failed worker signal, and, while a rollout
 * is in progress, the idle records.
 */
export function targetIds(input: {
  records: { id: string; state: unknown; threshold?: unknown }[];
  artifacts: { entity: string; id: string; updatedAt: unknown; value?: unknown }[];
  now: number;
  rolloutInProgress: boolean;
  /** Whether silent and failed records count (default true; false: the records alone). */
  silentToo?: boolean;
}): string[] {
  const silentToo = input.silentToo ?? true;
  const beats = new Map<string, number>();
  const failed = new Set<string>();
  for (const a of input.artifacts) {
    if (a.entity === "HEARTBEAT") {
      const at = typeof a.updatedAt === "string" ? Date.parse(a.updatedAt) : NaN;
      if (!Number.isNaN(at)) beats.set(a.id, at);
    } else {
      const state = (a.value as { state?: unknown } | undefined)?.state;
      if (typeof state === "string" && state.endsWith("_FAILED")) failed.add(a.id);
    }
  }
  const stale = input.now - SILENT_SEC * 1000;
  const ids: string[] = [];
  for (const r of input.records) {
    if (typeof r.state !== "string") continue;
    const threshold = typeof r.threshold === "string" ? Date.parse(r.threshold) : NaN;
    const beat = beats.get(r.id);
    const silent = failed.has(r.id) || beat === undefined || beat < stale;
    if (
      r.state === "terminated" || threshold < input.now || (silentToo && silent) ||
      (input.rolloutInProgress && r.state === "idle")
    ) {
      ids.push(r.id);
    }
  }
  return ids;
}
