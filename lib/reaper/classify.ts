/**
 * Phase 2 of the reaper, pure: decides from what was read, never from a record alone, what to
 * lock, terminate and expunge ({@link classify}), and what to report and leave alone: records of
 * instances alive outside the pool, thresholds that are not strict UTC timestamps
 * ({@link parseTimestamp}), unknown states. Reads and writes nothing.
 *
 * @module
 */
import { OWNER_TAG } from "../contract.ts";
import type { ArtifactKey, Pool, Row } from "./reads.ts";

/** States a record can expire from. */
const LIVE_STATES = new Set(["created", "running", "idle", "claimed"]);

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

export interface ClassifyInput {
  records: Row[];
  artifacts: ArtifactKey[];
  pool: Pool;
  /** Now, in epoch milliseconds. */
  now: number;
  /** The grace period: young orphans, young records of unlisted instances, young strays. */
  graceMs: number;
  /**
   * Instances EC2 reports terminated (lib/reaper/ended.ts, and `Pool.ended`), among those
   * heartbeats and worker signals without a record name, and records the listing did not hold:
   * their items are
   * strays at once, whatever their age (a terminated instance's last heartbeat can land after the
   * reaper deleted its items), and their records lost at once (no grace for what EC2 ended).
   */
  ended?: ReadonlySet<string>;
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
  /** Heartbeats and worker signals with no record, older than the grace or of an instance EC2 reports terminated: delete. */
  strays: ArtifactKey[];
  reasons: Map<string, string>;
  warnings: string[];
}

/**
 * The instances whose heartbeat or worker signal has no record and is younger than the grace,
 * and that the pool listing does not hold alive: only EC2's word (lib/reaper/ended.ts) can tell
 * whether their items are strays now or a just-launched instance's (older ones are strays
 * anyway). None in a steady pool, so no look-up.
 */
export function unrecordedYoung(
  input: Pick<ClassifyInput, "records" | "artifacts" | "pool" | "now" | "graceMs">,
): string[] {
  const recorded = new Set(input.records.map((r) => r.id));
  const grace = input.now - input.graceMs;
  const ids = input.artifacts.filter((key) => {
    if (recorded.has(key.id) || input.pool.alive.has(key.id) || input.pool.foreign.has(key.id)) {
      return false;
    }
    const updated = parseTimestamp(key.updatedAt);
    return updated === undefined || updated >= grace;
  }).map((key) => key.id);
  return [...new Set(ids)];
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
    // A targeted run asked EC2 about some instances only: the others are not judged this run.
    if (pool.checked && !pool.checked.has(r.id)) continue;
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
      // A record just written may name an instance EC2 does not list yet: give it the grace,
      // unless EC2 says the instance ended (a reclaimed spot instance, busy or idle).
      const updated = parseTimestamp(r.updatedAt);
      if (input.ended?.has(r.id)) {
        plan.lost.push(r.id);
        why(r.id, `record ${r.state} but EC2 reports the instance terminated`);
      } else if (updated !== undefined && updated <= grace) {
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
    if (recorded.has(key.id)) continue;
    const updated = parseTimestamp(key.updatedAt);
    if (input.ended?.has(key.id) || (updated !== undefined && updated < grace)) {
      plan.strays.push(key);
    }
  }
  return plan;
}
