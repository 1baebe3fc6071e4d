/**
 * Phase 5 of the reaper: per instance known to be gone, its heartbeat and worker signal first,
 * its record last ({@link expunge}), so no crash or failed batch leaves an artifact no run looks
 * for; and the sweep of heartbeats and worker signals that have no record. Writes:
 * BatchWriteItem deletions on the table, 25 per request.
 *
 * @module
 */
import { BatchWriteCommand, type DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { type Entity, idOf, pk, sk } from "../contract.ts";
import { describeError, type Logger } from "../task.ts";
import { chunks, forEachLimit, progress } from "./batching.ts";
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

/**
 * Deletes, for each id, its heartbeat and worker signal, then, once both are gone, its record:
 * the record is what makes a run look for an instance's artifacts, so it goes last, and a crash
 * or a failed batch leaves a record the next run expunges again. `strays` (artifacts without a
 * record) are deleted with the artifacts.
 */
export async function expunge(
  ddb: DynamoDBDocumentClient,
  table: string,
  ids: string[],
  strays: ArtifactKey[],
  options: DeleteOptions,
): Promise<Expunged> {
  const artifacts = [
    ...ids.flatMap((id) => (["HEARTBEAT", "WS"] as const).map((entity) => ({ entity, id }))),
    ...strays,
  ];
  const first = await deleteKeys(ddb, table, artifacts, options, "artifact items deleted");
  const done = (key: string) => !first.failed.has(key) && !first.skipped.has(key);
  const ready = ids.filter((id) => done(`HEARTBEAT ${id}`) && done(`WS ${id}`));
  const records = ready.map((id) => ({ entity: "INSTANCE" as const, id }));
  const second = await deleteKeys(ddb, table, records, options, "instance records deleted");
  const expunged = ready.filter((id) =>
    !second.failed.has(`INSTANCE ${id}`) && !second.skipped.has(`INSTANCE ${id}`)
  );
  const sweptStrays = strays.filter((s) => done(`${s.entity} ${s.id}`));
  const notDeleted = first.failed.size + first.skipped.size + second.failed.size +
    second.skipped.size;
  return {
    ids: expunged,
    strays: sweptStrays,
    items: artifacts.length + records.length - notDeleted,
    // Records not tried because their artifacts were not count as skipped too.
    skipped: first.skipped.size + ids.length - ready.length -
      ids.filter((id) => first.failed.has(`HEARTBEAT ${id}`) || first.failed.has(`WS ${id}`))
        .length +
      second.skipped.size,
    errors: [...first.errors, ...second.errors],
  };
}

export interface DeleteOptions {
  concurrency: number;
  sleep: (ms: number) => Promise<void>;
  log: Logger;
  /** True once no new request may start (the run's deadline). */
  stop?: () => boolean;
}

/** BatchWriteItem deletes, 25 per request, unprocessed items retried with backoff and jitter. */
async function deleteKeys(
  ddb: DynamoDBDocumentClient,
  table: string,
  keys: { entity: Entity; id: string }[],
  options: DeleteOptions,
  label: string,
): Promise<{ failed: Set<string>; skipped: Set<string>; errors: string[] }> {
  const failed = new Set<string>();
  const skipped = new Set<string>();
  const errors: string[] = [];
  const tick = progress(options.log, label, keys.length);
  await forEachLimit(chunks(keys, WRITE_BATCH), options.concurrency, async (batch) => {
    if (options.stop?.()) {
      for (const { entity, id } of batch) skipped.add(`${entity} ${id}`);
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
        if (attempt > 0) {
          await options.sleep(Math.min(50 * 2 ** attempt, 5000) * (0.5 + Math.random()));
        }
        const out = await ddb.send(new BatchWriteCommand({ RequestItems: { [table]: pending } }));
        pending = (out.UnprocessedItems?.[table] ?? []) as typeof pending;
      }
    } catch (error) {
      errors.push(`delete ${label.split(" ")[0]} items: ${describeError(error)}`);
      for (const { DeleteRequest: { Key } } of pending) {
        failed.add(`${Key.PK.replace(/^TYPE#/, "")} ${idOf(Key.SK)}`);
      }
    }
    for (let i = 0; i < batch.length; i++) tick();
  });
  return { failed, skipped, errors };
}
