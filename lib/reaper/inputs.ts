/**
 * The reaper's inputs (flags, environment variables, config file keys) and their parsing into
 * {@link DesiredReaper}. Reconciles and writes nothing; lib/config.ts composes these inputs.
 *
 * @module
 */
import { checkIds, type InputSpec, type Reader } from "../inputs.ts";
import { parseMaxPerRun, type RolloutInputs } from "../rollout.ts";

/**
 * The least `--orphan-grace-min`: the grace guards against EC2's eventual consistency (a
 * just-launched instance can be missing from DescribeInstances for seconds to minutes; AWS advises
 * retrying for up to a few minutes), so a shorter one would let a listing delay make live
 * instances look gone.
 */
export const MIN_CONSISTENCY_GRACE_MIN = 5;

/** `--rollout-max-per-run`'s default: a quarter of a class's serving idle instances per run. */
const ROLLOUT_DEFAULT = "25%";

/** The reaper's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "orphan-grace-min",
    env: ["REFRESH_ORPHAN_GRACE_MIN"],
    kind: "int",
    default: "15",
    help:
      `minutes a pool instance without a record, a record of an unlisted instance, or a heartbeat or worker signal without a record may exist before it is reaped; at least ${MIN_CONSISTENCY_GRACE_MIN}, as EC2 may list a just-launched instance only minutes later`,
  },
  {
    name: "sweep",
    env: ["REFRESH_SWEEP"],
    kind: "string",
    default: "auto",
    help:
      "auto or always: when the reaper lists the whole pool (orphans, the full pool view); auto: when due (every half orphan grace, at least 5 min, or when the table or template says so), other runs describe by id only the instances they act on",
  },
  {
    name: "reap-concurrency",
    env: ["REFRESH_REAP_CONCURRENCY"],
    kind: "int",
    default: "64",
    help:
      "DynamoDB writes in flight at once while reaping: locks (conditional updates), and as many delete requests of 25 items",
  },
  {
    name: "reap-write-rate",
    env: ["REFRESH_REAP_WRITE_RATE"],
    kind: "int",
    default: "1000",
    help:
      "DynamoDB writes per second per partition key while reaping (DynamoDB serves about 1,000; lower it for a table with less write capacity)",
  },
  {
    name: "terminated-retention-hours",
    env: ["REFRESH_TERMINATED_RETENTION_HOURS"],
    kind: "int",
    default: "24",
    help: "hours a terminated instance record is kept (DynamoDB TTL) before it expires",
  },
  {
    name: "legacy-launch-template-ids",
    env: ["REFRESH_LEGACY_LAUNCH_TEMPLATE_IDS"],
    kind: "list",
    help:
      "launch template ids (lt-…) whose instances count as the pool's although untagged (migration)",
  },
  {
    name: "runner-cleanup-sec",
    env: ["REFRESH_RUNNER_CLEANUP_SEC"],
    kind: "int",
    default: "60",
    help: "seconds a run may spend deleting runner registrations of gone instances",
  },
  {
    name: "rollout-max-per-run",
    env: ["REFRESH_ROLLOUT_MAX_PER_RUN"],
    kind: "string",
    default: ROLLOUT_DEFAULT,
    help:
      "idle instances of an older template version drained per class and run: a number, or a percentage (0: off)",
  },
  {
    name: "heartbeat-stale-sec",
    env: ["REFRESH_HEARTBEAT_STALE_SEC"],
    kind: "int",
    default: "300",
    help:
      "seconds without a heartbeat after which an idle instance is drained as unhealthy (0: heartbeats not judged)",
  },
  {
    name: "boot-grace-min",
    env: ["REFRESH_BOOT_GRACE_MIN"],
    kind: "int",
    default: "15",
    help: "minutes after launch an idle instance may go without any heartbeat (still booting)",
  },
];

/** The reaper's section of the desired state. */
export interface DesiredReaper {
  orphanGraceMin: number;
  /** When the whole pool is listed (lib/reaper/sweep.ts). */
  sweep: "auto" | "always";
  /** DynamoDB writes in flight at once, per kind (locks, delete requests). */
  concurrency: number;
  /** DynamoDB writes per second per partition key at most. */
  writeRate: number;
  terminatedRetentionHours: number;
  /** Templates whose instances count as the pool's without the ownership tag (migration). */
  legacyLaunchTemplateIds: string[];
  /** Time budget of the runner phase, in seconds. */
  runnerCleanupSec: number;
  /** Rollout and health draining (lib/rollout.ts). */
  rollout: RolloutInputs;
}

/** A launch template id, as EC2 writes them. */
const LAUNCH_TEMPLATE_ID = /^lt-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;

/** Reads the reaper's inputs, recording problems on the reader. */
export function parseReaper(r: Reader): DesiredReaper {
  const legacy = r.list("legacy-launch-template-ids") ?? [];
  const sweep = r.string("sweep") ?? "auto";
  if (sweep !== "auto" && sweep !== "always") {
    r.problems.push(`sweep: expected auto or always, got ${JSON.stringify(sweep)}`);
  }
  return {
    orphanGraceMin: r.int("orphan-grace-min", MIN_CONSISTENCY_GRACE_MIN)!,
    sweep: sweep === "always" ? "always" : "auto",
    concurrency: r.int("reap-concurrency", 1, 256)!,
    writeRate: r.int("reap-write-rate", 1, 1000)!,
    terminatedRetentionHours: r.int("terminated-retention-hours", 1, 24 * 365)!,
    legacyLaunchTemplateIds: checkIds(
      "legacy-launch-template-ids",
      legacy,
      LAUNCH_TEMPLATE_ID,
      "a launch template id (lt- and 8 or 17 hexadecimal digits)",
      r.problems,
    ) ?? [],
    runnerCleanupSec: r.int("runner-cleanup-sec", 0, 3600)!,
    rollout: {
      maxPerRun: maxPerRun(r),
      heartbeatStaleSec: r.int("heartbeat-stale-sec", 0, 86_400)!,
      bootGraceMin: r.int("boot-grace-min", 1, 1440)!,
    },
  };
}

/** `--rollout-max-per-run`: a number (also a JSON number in the config file) or a percentage. */
function maxPerRun(r: Reader): RolloutInputs["maxPerRun"] {
  const raw = r.raw["rollout-max-per-run"] ?? ROLLOUT_DEFAULT;
  const parsed = typeof raw === "string" || typeof raw === "number"
    ? parseMaxPerRun(String(raw))
    : `expected a whole number or a percentage, got ${JSON.stringify(raw)}`;
  if (typeof parsed === "string") {
    r.problems.push(`rollout-max-per-run: ${parsed}`);
    return { count: 0 };
  }
  return parsed;
}
