/**
 * Phase 5 of the reaper: per instance known to be gone, its heartbeat and worker signal first,
 * its record last, so no crash or failed batch leaves an artifact no run looks for; and the sweep
 * of heartbeats and worker signals that have no record. A stream ({@link Expunger}): the pipeline
 * hands it instances as they are known gone, and each request starts as soon as it holds 25
 * items, at the pace of lib/reaper/pace.ts. Writes: BatchWriteItem
 * deletions on the table, 25 per request.
 *
 * @module
 */
import { BatchWriteCommand, type DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { type Entity, idOf, pk, sk } from "../contract.ts";
import { describeError, type Logger } from "../task.ts";
import { Batcher, progress } from "./batching.ts";
import { backoffMs, isThrottle, type WritePacer } from "./pace.ts";
import type { ArtifactKey } from "./reads.ts";

/** BatchWriteItem takes at most 25 requests. */
const WRITE_BATCH = 25;
const WRITE_ATTEMPTS = 8;

export interface Expunged {
  /** Instances whose heartbeat, worker signal and record are all deleted. */
  ids: string[];
  /** Stray artifacts deleted. */
  strays: ArtifactKey[];
  items: number;
  /** Items not tried: the run's deadline had passed. */
  skipped: number;
  errors: string[];
}

export interface DeleteOptions {
  concurrency: number;
  sleep: (ms: number) => Promise<void>;
  log: Logger;
  /** True once no new request may start (the run's deadline). */
  stop?: () => boolean;
  /** Paces the deletions (one write per item, on its partition key); none: unpaced. */
  pacer?: WritePacer;
}

/** An item to delete. */
interface Key {
  entity: Entity;
  id: string;
}

const name = ({ entity, id }: Key) => `${entity} ${id}`;

/**
 * Deletes, for each instance known gone, its heartbeat and worker signal, then, once both are
 * gone, its record: the record is what makes a run look for an instance's artifacts, so it goes
 * last, and a crash or a failed request leaves a record the next run expunges again. A stream:
 * {@link add} instances as they are known gone, {@link addStrays} (artifacts without a record,
 * deleted with the artifacts), then {@link close} for the result. Requests of 25 items start as
 * soon as they are full, at most `concurrency` of each kind in flight, and hold what deleting
 * everything at the end would put in them: no more calls.
 */
export class Expunger {
  readonly #ids: string[] = [];
  readonly #strays: ArtifactKey[] = [];
  /** Per instance, its artifacts not yet deleted; -1 once one failed or was skipped. */
  readonly #left = new Map<string, number>();
  readonly #deleted = new Set<string>();
  readonly #failed = new Set<string>();
  readonly #skipped = new Set<string>();
  readonly #errors: string[] = [];
  /** Artifacts queued, so one named twice (a stray of an instance also gone) is sent once. */
  readonly #queued = new Set<string>();
  readonly #artifacts: Batcher<Key>;
  readonly #records: Batcher<Key>;

  constructor(
    readonly ddb: DynamoDBDocumentClient,
    readonly table: string,
    readonly options: DeleteOptions,
  ) {
    const { concurrency, log } = options;
    const artifactTick = progress(log, "artifact items deleted");
    const recordTick = progress(log, "instance records deleted");
    this.#artifacts = new Batcher(WRITE_BATCH, concurrency, async (batch) => {
      await this.#delete(batch, "artifact");
      for (const key of batch) {
        artifactTick();
        this.#artifactDone(key);
      }
    });
    this.#records = new Batcher(WRITE_BATCH, concurrency, async (batch) => {
      await this.#delete(batch, "record");
      for (let i = 0; i < batch.length; i++) recordTick();
    });
  }

  /** Instances known to be gone: their heartbeat and worker signal now, their record after. */
  add(ids: string[]): void {
    for (const id of ids) {
      this.#ids.push(id);
      this.#left.set(id, 2);
    }
    this.#queue(
      ids.flatMap((id) => (["HEARTBEAT", "WS"] as const).map((entity) => ({ entity, id }))),
    );
  }

  /** Heartbeats and worker signals that have no record. */
  addStrays(strays: ArtifactKey[]): void {
    this.#strays.push(...strays);
    this.#queue(strays.map(({ entity, id }) => ({ entity, id })));
  }

  #queue(keys: Key[]): void {
    const fresh = keys.filter((key) => !this.#queued.has(name(key)));
    for (const key of fresh) this.#queued.add(name(key));
    this.#artifacts.add(fresh);
  }

  /** Sends what is left and waits for every request; what was deleted, skipped and failed. */
  async close(): Promise<Expunged> {
    await this.#artifacts.close();
    await this.#records.close();
    const gone = (key: string) => this.#deleted.has(key);
    const artifactsOk = (id: string) => gone(`HEARTBEAT ${id}`) && gone(`WS ${id}`);
    const artifactFailed = (id: string) =>
      this.#failed.has(`HEARTBEAT ${id}`) || this.#failed.has(`WS ${id}`);
    return {
      ids: this.#ids.filter((id) => gone(`INSTANCE ${id}`)),
      strays: this.#strays.filter((s) => gone(`${s.entity} ${s.id}`)),
      items: this.#deleted.size,
      // Records not tried because their artifacts were not count as skipped too.
      skipped: this.#skipped.size +
        this.#ids.filter((id) => !artifactsOk(id) && !artifactFailed(id)).length,
      errors: this.#errors,
    };
  }

  /** An artifact's request is over: its instance's record is queued once both are deleted. */
  #artifactDone(key: Key): void {
    const left = this.#left.get(key.id);
    if (left === undefined || left < 0) return;
    if (!this.#deleted.has(name(key))) {
      this.#left.set(key.id, -1);
      return;
    }
    this.#left.set(key.id, left - 1);
    if (left === 1) this.#records.add([{ entity: "INSTANCE", id: key.id }]);
  }

  /**
   * One BatchWriteItem of up to 25 deletions, unprocessed items (DynamoDB's throttling of a batch)
   * and throttling errors retried with backoff and jitter, {@link WRITE_ATTEMPTS} in all.
   */
  async #delete(batch: Key[], kind: string): Promise<void> {
    const { options, table } = this;
    if (options.stop?.()) {
      for (const key of batch) this.#skipped.add(name(key));
      return;
    }
    let pending = batch.map(({ entity, id }) => ({
      DeleteRequest: { Key: { PK: pk(entity), SK: sk(id) } },
    }));
    try {
      for (let attempt = 0; pending.length; attempt++) {
        if (attempt === WRITE_ATTEMPTS) {
          throw new Error(`${pending.length} items still unprocessed after ${attempt} attempts`);
        }
        if (attempt > 0) await options.sleep(backoffMs(attempt));
        const perKey = countBy(pending.map((r) => r.DeleteRequest.Key.PK));
        for (const [key, units] of perKey) await options.pacer?.take(key, units);
        const sent = pending;
        try {
          const out = await this.ddb.send(
            new BatchWriteCommand({ RequestItems: { [table]: pending } }),
          );
          pending = (out.UnprocessedItems?.[table] ?? []) as typeof pending;
        } catch (error) {
          if (!isThrottle(error)) throw error;
        }
        const left = countBy(pending.map((r) => r.DeleteRequest.Key.PK));
        for (const [key, units] of perKey) {
          if (left.has(key)) options.pacer?.throttled(key);
          else options.pacer?.succeeded(key, units);
        }
        const still = new Set(
          pending.map((r) => `${r.DeleteRequest.Key.PK} ${r.DeleteRequest.Key.SK}`),
        );
        for (const { DeleteRequest: { Key } } of sent) {
          if (!still.has(`${Key.PK} ${Key.SK}`)) this.#deleted.add(keyName(Key));
        }
      }
    } catch (error) {
      this.#errors.push(`delete ${kind} items: ${describeError(error)}`);
      for (const { DeleteRequest: { Key } } of pending) this.#failed.add(keyName(Key));
    }
  }
}

/** `ENTITY id` of a table key. */
function keyName(key: { PK: string; SK: string }): string {
  return `${key.PK.replace(/^TYPE#/, "")} ${idOf(key.SK)}`;
}

function countBy(values: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}
