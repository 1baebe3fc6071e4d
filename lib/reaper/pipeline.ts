/**
 * Phases 3 to 5 of the reaper as one pipeline: locks, terminations and deletions flow instead of
 * waiting for each other. Each instance is handed on as soon as its own step is done:
 *
 * - **lock** ({@link lockRecords}): at most `--reap-concurrency` conditional updates in flight;
 *   a locked instance alive in EC2 goes to the terminations, one already gone to the deletions;
 * - **terminate** ({@link terminateOwned}): a TerminateInstances request starts as soon as 1,000
 *   instances of one proof are waiting (the rest once the last lock is done); instances that need
 *   no lock (records already terminated, orphans) wait there from the start; terminated (or
 *   unknown to EC2) instances go to the deletions;
 * - **expunge** ({@link Expunger}): a BatchWriteItem starts as soon as 25 heartbeats and worker
 *   signals are waiting, a record's once its heartbeat and worker signal are deleted.
 *
 * Every request holds as many items as the phases one after another would put in it, so the run
 * makes no more calls; only their overlap changes. DynamoDB writes go at the pace of
 * lib/reaper/pace.ts. Writes: UpdateItem and BatchWriteItem on the table, TerminateInstances.
 *
 * @module
 */
import type { DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import type { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import type { Logger } from "../task.ts";
import { Batcher } from "./batching.ts";
import { type Expunged, Expunger } from "./expunge.ts";
import { lockRecords, type LockResult, type LockTarget } from "./lock.ts";
import { WritePacer } from "./pace.ts";
import type { ArtifactKey, LiveInstance } from "./reads.ts";
import { TERMINATE_BATCH, type Terminated, terminateOwned } from "./terminate.ts";

/** TerminateInstances requests in flight at once (each of up to 1,000 instances). */
const TERMINATIONS = 2;

/** What the pipeline is given to do, from the classification and the drains. */
export interface Work {
  /** Records to lock, in order (expired, vanished, drained). */
  locks: LockTarget[];
  /** Pool instances alive in EC2, by id: a locked one is terminated, any other expunged. */
  alive: Map<string, LiveInstance>;
  /** Pool instances to terminate without a lock (records already terminated, orphans). */
  unlocked: LiveInstance[];
  /** Instances known gone without a lock (records already terminated): expunge. */
  gone: string[];
  /** Heartbeats and worker signals without a record: delete. */
  strays: ArtifactKey[];
}

export interface PipelineOptions {
  ddb: DynamoDBDocumentClient;
  ec2: EC2Client;
  table: string;
  /** The lock's `now` and TTL (lib/reaper/lock.ts). */
  now: string;
  expiresAt: number;
  /** Writes in flight at once, per kind (locks, deletions). */
  concurrency: number;
  /** Writes per second per partition key. */
  writeRate: number;
  log: Logger;
  /** True once no new unit of work may start (the run's deadline). */
  stop: () => boolean;
  /** Waits between retries of throttled writes; tests pass their own. */
  sleep: (ms: number) => Promise<void>;
}

/** What each step did. */
export interface Done {
  lock: LockResult;
  terminated: Terminated;
  expunged: Expunged;
}

/** Runs the work through lock, terminate and expunge; see the module documentation. */
export async function runPipeline(work: Work, options: PipelineOptions): Promise<Done> {
  const { ddb, ec2, table, log, stop, sleep, concurrency } = options;
  const pacer = new WritePacer(options.writeRate);
  const expunger = new Expunger(ddb, table, { concurrency, sleep, log, stop, pacer });
  const terminated: Terminated = {
    terminated: [],
    notFound: [],
    refused: [],
    skipped: [],
    errors: [],
  };
  const terminator = new Batcher<LiveInstance>(
    TERMINATE_BATCH,
    TERMINATIONS,
    async (batch) => {
      const done = await terminateOwned(ec2, batch, log, stop);
      terminated.terminated.push(...done.terminated);
      terminated.notFound.push(...done.notFound);
      terminated.refused.push(...done.refused);
      terminated.skipped.push(...done.skipped);
      terminated.errors.push(...done.errors);
      expunger.add([...done.terminated, ...done.notFound]);
    },
    (instance) => instance.proof ?? "",
  );

  expunger.add(work.gone);
  expunger.addStrays(work.strays);
  terminator.add(work.unlocked);
  const lock = await lockRecords(ddb, table, work.locks, {
    now: options.now,
    expiresAt: options.expiresAt,
    concurrency,
    log,
    stop,
    pacer,
    sleep,
    onLocked: (id) => {
      const instance = work.alive.get(id);
      if (instance) terminator.add([instance]);
      else expunger.add([id]);
    },
  });
  // Deletions of what is already known gone finish even if a termination step threw.
  const failed = await terminator.close().then(() => undefined, (error) => ({ error }));
  const expunged = await expunger.close();
  if (failed) throw failed.error;
  return { lock, terminated, expunged };
}
