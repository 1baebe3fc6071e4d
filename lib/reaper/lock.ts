/**
 * Phase 3 of the reaper, the lock: DESIGN.md's conditional update of an instance record to
 * `terminated` (with `expiresAt` as a TTL safety net), under a condition the caller gives
 * ({@link expiredCondition}, {@link unchangedCondition}). A failed condition means another
 * writer won, unless the item it returns is this run's own write (a lock whose reply was lost
 * and which the SDK retried). Locks go at the pace of lib/reaper/pace.ts, retried when throttled.
 * Writes: UpdateItem on the table.
 *
 * @module
 */
import { type DynamoDBDocumentClient, UpdateCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { unmarshall } from "npm:@aws-sdk/util-dynamodb@3.996.9";
import { pk, sk } from "../contract.ts";
import { describeError, type Logger } from "../task.ts";
import { forEachLimit, progress } from "./batching.ts";
import { backoffMs, isThrottle, type WritePacer } from "./pace.ts";
import type { Row } from "./reads.ts";

export interface LockCondition {
  expression: string;
  values: Record<string, unknown>;
}

/** DESIGN.md's lock: the threshold is still past (state and runId unchanged are always added). */
export function expiredCondition(now: string): LockCondition {
  return { expression: "#threshold < :now", values: { ":now": now } };
}

/** The record is as read: its threshold unchanged (state and runId are always added). */
export function unchangedCondition(row: Pick<Row, "threshold">): LockCondition {
  return row.threshold === undefined
    ? { expression: "attribute_not_exists(#threshold)", values: {} }
    : { expression: "#threshold = :thresholdRead", values: { ":thresholdRead": row.threshold } };
}

export interface LockTarget {
  row: Row;
  condition: LockCondition;
}

export interface LockResult {
  /** Ids locked by this run, in the order given (a lost reply recognised counts). */
  locked: string[];
  /** Ids another writer changed since the read. */
  lostRace: string[];
  /** Ids not tried: the run's deadline had passed. */
  skipped: string[];
  errors: string[];
}

export interface LockOptions {
  now: string;
  expiresAt: number;
  concurrency: number;
  log: Logger;
  /** True once no new lock may start (the run's deadline). */
  stop?: () => boolean;
  /** Paces the locks (one write each on `TYPE#INSTANCE`); none: unpaced. */
  pacer?: WritePacer;
  /** Waits between retries of a throttled lock; tests pass their own. */
  sleep?: (ms: number) => Promise<void>;
  /** Called as soon as a target is locked (the pipeline terminates it without waiting). */
  onLocked?: (id: string) => void;
}

/** Attempts of a lock DynamoDB throttles (each after the SDK's own retries). */
const LOCK_ATTEMPTS = 5;

/**
 * DESIGN.md's termination lock on each target: `state` and `runId` as read AND the caller's
 * condition, setting `state = terminated`, `threshold`/`updatedAt` = now, `runId = ""` and the TTL
 * `expiresAt`. A failed condition returns the item as it is (ReturnValuesOnConditionCheckFailure
 * ALL_OLD): if that is exactly what this lock writes, the reply of an earlier attempt was lost
 * and the SDK retried it, so the record is ours; otherwise another writer won.
 */
export async function lockRecords(
  ddb: DynamoDBDocumentClient,
  table: string,
  targets: LockTarget[],
  options: LockOptions,
): Promise<LockResult> {
  const { now, expiresAt } = options;
  const won = new Set<string>();
  const lostRace = new Set<string>();
  const skipped = new Set<string>();
  const errors: string[] = [];
  const tick = progress(options.log, "locked", targets.length);
  await forEachLimit(targets, options.concurrency, async ({ row, condition }) => {
    if (options.stop?.()) {
      skipped.add(row.id);
      return;
    }
    const runId = row.runId === undefined ? "attribute_not_exists(#runId)" : "#runId = :runIdRead";
    const key = pk("INSTANCE");
    try {
      await sendPaced(options, key, () =>
        ddb.send(
          new UpdateCommand({
            TableName: table,
            Key: { PK: key, SK: sk(row.id) },
            ConditionExpression: `#state = :read AND ${condition.expression} AND ${runId}`,
            UpdateExpression:
              "SET #state = :terminated, #threshold = :lockedAt, #runId = :empty, #updatedAt = :lockedAt, #ttl = :ttl",
            ExpressionAttributeNames: {
              "#state": "state",
              "#threshold": "threshold",
              "#runId": "runId",
              "#updatedAt": "updatedAt",
              "#ttl": "expiresAt",
            },
            ExpressionAttributeValues: {
              ":read": row.state,
              ":lockedAt": now,
              ":terminated": "terminated",
              ":empty": "",
              ":ttl": expiresAt,
              ...(row.runId === undefined ? {} : { ":runIdRead": row.runId }),
              ...condition.values,
            },
            ReturnValuesOnConditionCheckFailure: "ALL_OLD",
          }),
        ));
      won.add(row.id);
    } catch (error) {
      if ((error as Error).name !== "ConditionalCheckFailedException") {
        errors.push(`lock ${row.id}: ${describeError(error)}`);
      } else if (isOwnLock((error as { Item?: unknown }).Item, now, expiresAt)) {
        options.log.info(`reaper: ${row.id} was already locked by this run (a lost reply)`);
        won.add(row.id);
      } else lostRace.add(row.id);
    }
    if (won.has(row.id)) options.onLocked?.(row.id);
    tick();
  });
  return {
    locked: targets.map((t) => t.row.id).filter((id) => won.has(id)),
    lostRace: targets.map((t) => t.row.id).filter((id) => lostRace.has(id)),
    skipped: targets.map((t) => t.row.id).filter((id) => skipped.has(id)),
    errors,
  };
}

/** Whether an item (as DynamoDB returns it) is exactly what this run's lock writes. */
function isOwnLock(raw: unknown, now: string, expiresAt: number): boolean {
  if (!raw || typeof raw !== "object") return false;
  const item = unmarshall(raw as Parameters<typeof unmarshall>[0]);
  return item.state === "terminated" && item.threshold === now && item.updatedAt === now &&
    item.runId === "" && Number(item.expiresAt) === expiresAt;
}

/**
 * Sends one write of one unit to partition `key` at the pacer's pace; a throttled write slows the
 * key down and is retried after {@link backoffMs}, {@link LOCK_ATTEMPTS} times in all.
 */
async function sendPaced<T>(
  options: Pick<LockOptions, "pacer" | "sleep">,
  key: string,
  send: () => Promise<T>,
): Promise<T> {
  const sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  for (let attempt = 1;; attempt++) {
    await options.pacer?.take(key, 1);
    try {
      const out = await send();
      options.pacer?.succeeded(key, 1);
      return out;
    } catch (error) {
      if (!isThrottle(error) || attempt === LOCK_ATTEMPTS) throw error;
      options.pacer?.throttled(key);
      await sleep(backoffMs(attempt));
    }
  }
}
