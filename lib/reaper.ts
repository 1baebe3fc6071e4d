/**
 * The garbage collector of the pool: instance lifecycle maintenance.
 *
 * It reads every instance record (`PK = TYPE#INSTANCE`, every page) and the pool's live EC2
 * instances (tag {@link OWNER_TAG} = table), then:
 *
 * 1. locks each expired record (live state, `threshold` before now) with DESIGN.md's conditional
 *    update to `terminated` (with `expiresAt` as a TTL safety net); a failed condition means
 *    provision or release won the race, and that instance is left alone;
 * 2. terminates, in batches of 1,000, the locked instances, the instances whose record is already
 *    `terminated` but which still run (a crash between phases), and orphans (tagged instances older
 *    than the grace period with no record);
 * 3. deletes the instance record, heartbeat and worker signal of every instance known to be gone
 *    (BatchWriteItem, 25 per request), so what a run reads never grows with history; records in a
 *    live state whose instance is gone from EC2 are locked and deleted the same way;
 * 4. deletes the GitHub runner registrations of those instances (name starting with the id).
 *
 * Under dry-run it reads, and lists what it would lock, terminate and delete.
 *
 * @module
 */
import {
  DescribeInstancesCommand,
  TerminateInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import type { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import {
  BatchWriteCommand,
  type DynamoDBDocumentClient,
  QueryCommand,
  UpdateCommand,
} from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { idOf, type InstanceRecord, OWNER_TAG, pk, sk, timestamp } from "./contract.ts";
import type { InputSpec, Reader } from "./inputs.ts";
import {
  type Change,
  describeError,
  type Logger,
  type TaskContext,
  type TaskOutcome,
} from "./task.ts";

/** The reaper's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "orphan-grace-min",
    env: ["REFRESH_ORPHAN_GRACE_MIN"],
    kind: "int",
    default: "15",
    help: "minutes a tagged instance without a live record may exist before it is terminated",
  },
  {
    name: "reap-concurrency",
    env: ["REFRESH_REAP_CONCURRENCY"],
    kind: "int",
    default: "16",
    help: "conditional updates in flight at once while locking expired instances",
  },
  {
    name: "terminated-retention-hours",
    env: ["REFRESH_TERMINATED_RETENTION_HOURS"],
    kind: "int",
    default: "24",
    help: "hours a terminated instance record is kept (DynamoDB TTL) before it expires",
  },
];

/** The reaper's section of the desired state. */
export interface DesiredReaper {
  orphanGraceMin: number;
  concurrency: number;
  terminatedRetentionHours: number;
}

/** Reads the reaper's inputs, recording problems on the reader. */
export function parseReaper(r: Reader): DesiredReaper {
  return {
    orphanGraceMin: r.int("orphan-grace-min", 1)!,
    concurrency: r.int("reap-concurrency", 1, 256)!,
    terminatedRetentionHours: r.int("terminated-retention-hours", 1, 24 * 365)!,
  };
}

/** States a record can expire from. */
const LIVE_STATES = new Set(["created", "running", "idle", "claimed"]);
/** EC2 states of an instance that still exists (and costs money). */
const ALIVE_EC2 = ["pending", "running", "stopping", "stopped"];
/** TerminateInstances takes at most 1,000 ids. */
const TERMINATE_BATCH = 1000;
/** EC2 filters take at most 200 values. */
const FILTER_VALUES = 200;
/** BatchWriteItem takes at most 25 requests. */
const WRITE_BATCH = 25;
const WRITE_ATTEMPTS = 8;
/** Log a progress line every this many items of a long phase. */
const PROGRESS_EVERY = 500;

export interface ReaperOptions {
  /** Query page size (`Limit`); by default DynamoDB's 1 MB pages. */
  pageSize?: number;
  /** Waits between BatchWriteItem retries; tests pass their own. */
  sleep?: (ms: number) => Promise<void>;
}

/** What the reaper counted, by category; `found` of its outcome. */
export interface ReaperCounts {
  records: number;
  /** Items DynamoDB read (ScannedCount of every page). */
  itemsRead: number;
  pages: number;
  /** Pool instances alive in EC2 (tagged). */
  alive: number;
  expired: number;
  locked: number;
  lostRace: number;
  /** Records already terminated whose instance still ran. */
  unfinished: number;
  orphans: number;
  /** Live records whose instance is gone from EC2, marked terminated and deleted. */
  lost: number;
  /** Instances EC2 accepted to terminate. */
  terminated: number;
  /** Ids EC2 did not know (already gone). */
  notFound: number;
  /** Instances EC2 refused to terminate (termination protection). */
  refused: number;
  /** Instances whose record, heartbeat and worker signal were deleted. */
  expunged: number;
  itemsDeleted: number;
  runnersDeleted: number;
  runnersBusy: number;
}

type Row = Pick<InstanceRecord, "state" | "threshold" | "runId" | "updatedAt"> & {
  id: string;
};

/** The reaper task: see the module documentation. */
export async function reapInstances(
  ctx: TaskContext,
  options: ReaperOptions = {},
): Promise<TaskOutcome> {
  const { ddb, ec2 } = ctx.clients;
  const { table, reaper } = ctx.desired;
  const log = ctx.log;
  const sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  const now = ctx.now();
  const nowText = timestamp(now);
  const graceText = timestamp(new Date(now.getTime() - reaper.orphanGraceMin * 60_000));
  const expiresAt = Math.floor(now.getTime() / 1000) + reaper.terminatedRetentionHours * 3600;
  const warnings: string[] = [];
  const errors: string[] = [];

  const read = await readRecords(ddb, table, options.pageSize, log);
  const records = new Map(read.records.map((r) => [r.id, r]));
  const tagged = await listTagged(ec2, table);
  log.info(
    `reaper: ${read.records.length} instance records, ${tagged.size} tagged instances alive`,
  );

  const expired: Row[] = [];
  const current: Row[] = [];
  const terminatedRecords: Row[] = [];
  for (const r of read.records) {
    if (r.state === "terminated") terminatedRecords.push(r);
    else if (!LIVE_STATES.has(r.state) || typeof r.threshold !== "string") {
      warnings.push(
        `record ${r.id} has state ${JSON.stringify(r.state)} and threshold ${
          JSON.stringify(r.threshold)
        }; expected a state of ${[...LIVE_STATES, "terminated"].join(", ")} and a timestamp`,
      );
    } else if (r.threshold < nowText) expired.push(r);
    else current.push(r);
  }
  // Instances the tag listing cannot vouch for (untagged, or gone): ask EC2 by id.
  const unchecked = [...terminatedRecords, ...current].map((r) => r.id).filter((id) =>
    !tagged.has(id)
  );
  const aliveById = await aliveAmong(ec2, unchecked);
  const isAlive = (id: string) => tagged.has(id) || aliveById.has(id);

  const unfinished = terminatedRecords.filter((r) => isAlive(r.id)).map((r) => r.id);
  const gone = terminatedRecords.filter((r) => !isAlive(r.id)).map((r) => r.id);
  // A record just written may name an instance EC2 does not list yet: give it the grace period.
  const lost = current.filter((r) => !isAlive(r.id) && (r.updatedAt ?? "") <= graceText);
  const orphans = [...tagged].filter(([id, launched]) =>
    !records.has(id) && launched !== undefined && launched < graceText
  ).map(([id]) => id);

  const counts: ReaperCounts = {
    records: read.records.length,
    itemsRead: read.scanned,
    pages: read.pages,
    alive: tagged.size,
    expired: expired.length,
    locked: 0,
    lostRace: 0,
    unfinished: unfinished.length,
    orphans: orphans.length,
    lost: 0,
    terminated: 0,
    notFound: 0,
    refused: 0,
    expunged: 0,
    itemsDeleted: 0,
    runnersDeleted: 0,
    runnersBusy: 0,
  };
  const reason = new Map<string, string>();
  for (const r of expired) reason.set(r.id, `expired ${r.state} (threshold ${r.threshold})`);
  for (const id of unfinished) reason.set(id, "record already terminated, instance still alive");
  for (const id of orphans) reason.set(id, `orphan: no record, launched ${tagged.get(id)}`);
  for (const r of lost) reason.set(r.id, `record ${r.state} but instance gone from EC2`);
  for (const id of gone) reason.set(id, "record terminated, instance gone from EC2");

  if (ctx.dryRun) {
    const terminate = [...expired.map((r) => r.id), ...unfinished, ...orphans];
    const expunge = [...lost.map((r) => r.id), ...gone];
    const changes: Change[] = [
      ...terminate.map((id) => change("terminate", id, reason)),
      ...expunge.map((id) => change("expunge", id, reason)),
    ];
    counts.lost = lost.length;
    await cleanRunners(ctx, [...terminate, ...expunge], counts, changes, warnings);
    return outcome(counts, changes, warnings, true);
  }

  // Phase 1: lock. Expired records with DESIGN.md's condition; lost ones only if unchanged.
  const won = new Set<string>();
  const tick = progress(log, "locked", expired.length + lost.length);
  await forEachLimit(
    [...expired.map((r) => [r, true] as const), ...lost.map((r) => [r, false] as const)],
    reaper.concurrency,
    async ([r, isExpired]) => {
      try {
        await lock(ddb, table, r, isExpired, nowText, expiresAt);
        won.add(r.id);
      } catch (error) {
        if ((error as Error).name === "ConditionalCheckFailedException") {
          counts.lostRace++;
          log.info(`reaper: ${r.id} changed since it was read (lost race), left alone`);
        } else errors.push(`lock ${r.id}: ${describeError(error)}`);
      }
      tick();
    },
  );
  // In the order read, so the report is stable.
  const locked = expired.filter((r) => won.has(r.id)).map((r) => r.id);
  const lockedLost = lost.filter((r) => won.has(r.id)).map((r) => r.id);
  counts.locked = locked.length;
  counts.lost = lockedLost.length;

  // Phase 2: terminate only what is locked, already terminated, or orphaned.
  const result = await terminate(ec2, [...locked, ...unfinished, ...orphans], log);
  counts.terminated = result.terminated.length;
  counts.notFound = result.notFound.length;
  counts.refused = result.refused.length;
  for (const [id, message] of result.refused) {
    warnings.push(`${id}: EC2 refused to terminate it (${message}); its record stays terminated`);
  }
  errors.push(...result.errors);

  // Phase 3: expunge what is certainly gone.
  const dead = [...result.terminated, ...result.notFound, ...lockedLost, ...gone];
  const deleted = await deleteArtifacts(ddb, table, dead, reaper.concurrency, sleep, log);
  counts.expunged = deleted.ids.length;
  counts.itemsDeleted = deleted.items;
  errors.push(...deleted.errors);

  const changes: Change[] = [
    ...result.terminated.map((id) => change("terminate", id, reason)),
    ...result.notFound.map((id) => change("expunge", id, reason, "already gone from EC2")),
    ...[...lockedLost, ...gone].map((id) => change("expunge", id, reason)),
  ];

  await cleanRunners(ctx, dead, counts, changes, warnings);

  const done = outcome(counts, changes, warnings, false);
  if (errors.length) {
    const more = errors.length > 3 ? ` (and ${errors.length - 3} more)` : "";
    throw new Error(
      `${done.summary}; ${errors.length} operations failed, retried next run: ${
        errors.slice(0, 3).join("; ")
      }${more}`,
    );
  }
  return done;
}

function change(action: string, id: string, reason: Map<string, string>, extra?: string): Change {
  const detail = [reason.get(id), extra].filter(Boolean).join("; ");
  return { action, target: `instance ${id}`, detail };
}

function outcome(
  counts: ReaperCounts,
  changes: Change[],
  warnings: string[],
  dryRun: boolean,
): TaskOutcome {
  const would = dryRun ? "would be " : "";
  const parts = [
    counts.expired && `${counts.expired} expired`,
    counts.locked && `${counts.locked} locked`,
    counts.lostRace && `${counts.lostRace} lost to another writer`,
    counts.unfinished && `${counts.unfinished} left running by an earlier run`,
    counts.orphans && `${counts.orphans} orphans`,
    counts.lost && `${counts.lost} records of vanished instances`,
    counts.terminated && `${counts.terminated} terminated`,
    counts.refused && `${counts.refused} refused by EC2`,
    counts.expunged && `${counts.expunged} expunged (${counts.itemsDeleted} items)`,
    counts.runnersDeleted && `${counts.runnersDeleted} runners deleted`,
    counts.runnersBusy && `${counts.runnersBusy} busy runners left`,
  ].filter(Boolean);
  const summary = dryRun && changes.length
    ? `${changes.length} changes ${would}made: ${parts.join(", ")}`
    : parts.length
    ? parts.join(", ")
    : `nothing to reap (${counts.records} records, ${counts.alive} instances alive)`;
  return { summary, found: { ...counts }, changes, warnings };
}

/** Every instance record, page by page. */
async function readRecords(
  ddb: DynamoDBDocumentClient,
  table: string,
  pageSize: number | undefined,
  log: Logger,
): Promise<{ records: Row[]; scanned: number; pages: number }> {
  const records: Row[] = [];
  let scanned = 0;
  let pages = 0;
  let start: Record<string, unknown> | undefined;
  do {
    const out = await ddb.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: "#pk = :pk",
        ProjectionExpression: "#sk, #state, #threshold, #runId, #updatedAt",
        ExpressionAttributeNames: {
          "#pk": "PK",
          "#sk": "SK",
          "#state": "state",
          "#threshold": "threshold",
          "#runId": "runId",
          "#updatedAt": "updatedAt",
        },
        ExpressionAttributeValues: { ":pk": pk("INSTANCE") },
        ExclusiveStartKey: start,
        Limit: pageSize,
      }),
    );
    for (const item of out.Items ?? []) {
      records.push({
        id: idOf(item.SK),
        state: item.state,
        threshold: item.threshold,
        runId: item.runId,
        updatedAt: item.updatedAt,
      });
    }
    scanned += out.ScannedCount ?? 0;
    pages++;
    start = out.LastEvaluatedKey;
    if (start) log.info(`reaper: read ${records.length} instance records (${pages} pages)`);
  } while (start);
  return { records, scanned, pages };
}

/** The pool's instances still alive in EC2, with their launch time. */
async function listTagged(ec2: EC2Client, table: string): Promise<Map<string, string | undefined>> {
  const alive = new Map<string, string | undefined>();
  const filters = [
    { Name: `tag:${OWNER_TAG}`, Values: [table] },
    { Name: "instance-state-name", Values: ALIVE_EC2 },
  ];
  for await (const instance of describe(ec2, filters)) {
    alive.set(instance.InstanceId!, instance.LaunchTime && timestamp(instance.LaunchTime));
  }
  return alive;
}

/** Which of these ids are instances alive in EC2 (an `instance-id` filter ignores unknown ids). */
async function aliveAmong(ec2: EC2Client, ids: string[]): Promise<Set<string>> {
  const alive = new Set<string>();
  for (const batch of chunks(ids, FILTER_VALUES)) {
    const filters = [
      { Name: "instance-id", Values: batch },
      { Name: "instance-state-name", Values: ALIVE_EC2 },
    ];
    for await (const instance of describe(ec2, filters)) alive.add(instance.InstanceId!);
  }
  return alive;
}

async function* describe(ec2: EC2Client, filters: { Name: string; Values: string[] }[]) {
  let token: string | undefined;
  do {
    const out = await ec2.send(
      new DescribeInstancesCommand({ Filters: filters, MaxResults: 1000, NextToken: token }),
    );
    for (const reservation of out.Reservations ?? []) yield* reservation.Instances ?? [];
    token = out.NextToken;
  } while (token);
}

/** Phase 1: DESIGN.md's termination lock; throws ConditionalCheckFailedException on a lost race. */
async function lock(
  ddb: DynamoDBDocumentClient,
  table: string,
  r: Row,
  expired: boolean,
  now: string,
  expiresAt: number,
): Promise<void> {
  // An expired record: unchanged state and runId, threshold still past. A record whose instance
  // vanished: unchanged state, runId and threshold.
  const runId = r.runId === undefined ? "attribute_not_exists(#runId)" : "#runId = :runIdRead";
  const threshold = expired ? "#threshold < :now" : "#threshold = :thresholdRead";
  await ddb.send(
    new UpdateCommand({
      TableName: table,
      Key: { PK: pk("INSTANCE"), SK: sk(r.id) },
      ConditionExpression: `#state = :read AND ${threshold} AND ${runId}`,
      UpdateExpression:
        "SET #state = :terminated, #threshold = :now, #runId = :empty, #updatedAt = :now, #ttl = :ttl",
      ExpressionAttributeNames: {
        "#state": "state",
        "#threshold": "threshold",
        "#runId": "runId",
        "#updatedAt": "updatedAt",
        "#ttl": "expiresAt",
      },
      ExpressionAttributeValues: {
        ":read": r.state,
        ":now": now,
        ":terminated": "terminated",
        ":empty": "",
        ":ttl": expiresAt,
        ...(r.runId === undefined ? {} : { ":runIdRead": r.runId }),
        ...(expired ? {} : { ":thresholdRead": r.threshold }),
      },
    }),
  );
}

/** EC2 errors that name ids to drop from a batch, which is then retried without them. */
const NAMED_ID_ERRORS = new Set([
  "InvalidInstanceID.NotFound",
  "InvalidInstanceID.Malformed",
  "OperationNotPermitted",
]);

interface Terminated {
  terminated: string[];
  notFound: string[];
  refused: [string, string][];
  errors: string[];
}

/** Phase 2: TerminateInstances in batches; ids EC2 names in an error never block the rest. */
async function terminate(ec2: EC2Client, ids: string[], log: Logger): Promise<Terminated> {
  const done: Terminated = { terminated: [], notFound: [], refused: [], errors: [] };
  for (const batch of chunks(ids, TERMINATE_BATCH)) {
    let rest = batch;
    while (rest.length) {
      try {
        await ec2.send(new TerminateInstancesCommand({ InstanceIds: rest }));
        done.terminated.push(...rest);
        break;
      } catch (error) {
        const { name, message } = error as Error;
        const named = NAMED_ID_ERRORS.has(name) ? idsNamed(message, rest) : [];
        if (named.length === 0) {
          done.errors.push(`terminate ${rest.length} instances: ${describeError(error)}`);
          break;
        }
        if (name === "OperationNotPermitted") {
          done.refused.push(...named.map((id): [string, string] => [id, message]));
        } else done.notFound.push(...named);
        rest = rest.filter((id) => !named.includes(id));
      }
    }
    log.info(`reaper: terminated ${done.terminated.length} of ${ids.length} instances`);
  }
  return done;
}

/** The ids of a batch that an error message names (as whole words). */
function idsNamed(message: string, ids: string[]): string[] {
  const words = new Set(message.split(/[^A-Za-z0-9-]+/));
  return ids.filter((id) => words.has(id));
}

/** Phase 3: deletes the record, heartbeat and worker signal of each id. */
async function deleteArtifacts(
  ddb: DynamoDBDocumentClient,
  table: string,
  ids: string[],
  concurrency: number,
  sleep: (ms: number) => Promise<void>,
  log: Logger,
): Promise<{ ids: string[]; items: number; errors: string[] }> {
  const keys = ids.flatMap((id) =>
    (["INSTANCE", "HEARTBEAT", "WS"] as const).map((entity) => ({ PK: pk(entity), SK: sk(id) }))
  );
  const failed = new Set<string>();
  const errors: string[] = [];
  const tick = progress(log, "artifact items deleted", keys.length);
  await forEachLimit(chunks(keys, WRITE_BATCH), concurrency, async (batch) => {
    let pending = batch.map((Key) => ({ DeleteRequest: { Key } }));
    try {
      for (let attempt = 0; pending.length; attempt++) {
        if (attempt === WRITE_ATTEMPTS) {
          throw new Error(`${pending.length} items still unprocessed after ${attempt} attempts`);
        }
        if (attempt > 0) await sleep(Math.min(50 * 2 ** attempt, 5000) * (0.5 + Math.random()));
        const out = await ddb.send(
          new BatchWriteCommand({ RequestItems: { [table]: pending } }),
        );
        pending = (out.UnprocessedItems?.[table] ?? []) as typeof pending;
      }
    } catch (error) {
      errors.push(`delete artifacts: ${describeError(error)}`);
      for (const { DeleteRequest } of pending) failed.add(idOf(DeleteRequest.Key.SK));
    }
    for (let i = 0; i < batch.length; i++) tick();
  });
  const deleted = ids.filter((id) => !failed.has(id));
  return { ids: deleted, items: deleted.length * 3, errors };
}

/**
 * Phase 4: deletes the runner registrations (name starting with the instance id) of dead
 * instances; busy runners are left alone and reported. Under dry-run it only lists them.
 */
async function cleanRunners(
  ctx: TaskContext,
  dead: string[],
  counts: ReaperCounts,
  changes: Change[],
  warnings: string[],
): Promise<void> {
  if (dead.length === 0) return;
  const { github } = ctx.clients;
  const scope = ctx.desired.github.scope;
  if (!github || !scope) {
    warnings.push(
      `no GitHub ${
        github ? "--repo or --org" : "token"
      }: runner registrations of ${dead.length} terminated instances not deleted`,
    );
    return;
  }
  const base = "repo" in scope
    ? { path: "/repos/{owner}/{repo}", params: { owner: scope.repo.owner, repo: scope.repo.name } }
    : { path: "/orgs/{org}", params: { org: scope.org } };
  const ids = new Set(dead);
  try {
    const runners: GithubRunner[] = await github.paginate(`GET ${base.path}/actions/runners`, {
      ...base.params,
      per_page: 100,
    });
    for (const runner of runners) {
      // The whole leading id: i-0abc is not a prefix match of i-0abcd-large.
      const id = /^i-[0-9a-f]+/.exec(runner.name)?.[0];
      if (!id || !ids.has(id)) continue;
      const target = `runner ${runner.name} (#${runner.id})`;
      if (!runner.busy && !ctx.dryRun) {
        try {
          await github.request(`DELETE ${base.path}/actions/runners/{runner_id}`, {
            ...base.params,
            runner_id: runner.id,
          });
        } catch (error) {
          const status = (error as { status?: number }).status;
          if (status === 404) continue;
          if (status !== 422) throw error;
          runner.busy = true;
        }
      }
      if (runner.busy) {
        counts.runnersBusy++;
        warnings.push(`${target} of terminated instance ${id} is busy; left alone`);
      } else {
        counts.runnersDeleted++;
        changes.push({ action: "delete-runner", target, detail: `instance ${id} is gone` });
      }
    }
  } catch (error) {
    warnings.push(`runner registrations not cleaned: ${describeError(error)}`);
  }
}

interface GithubRunner {
  id: number;
  name: string;
  busy: boolean;
}

function* chunks<T>(items: T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

/** Runs `fn` over the items with at most `limit` in flight; `fn` must not throw. */
async function forEachLimit<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const iterator = items[Symbol.iterator]();
  const worker = async () => {
    for (let next = iterator.next(); !next.done; next = iterator.next()) await fn(next.value);
  };
  await Promise.all(Array.from({ length: limit }, worker));
}

/** A counter that logs every {@link PROGRESS_EVERY} steps of a long phase. */
function progress(log: Logger, label: string, total: number): () => void {
  let n = 0;
  return () => {
    n++;
    if (n % PROGRESS_EVERY === 0 || (n === total && total >= PROGRESS_EVERY)) {
      log.info(`reaper: ${label}: ${n} of ${total}`);
    }
  };
}
