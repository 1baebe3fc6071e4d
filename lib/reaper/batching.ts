/**
 * Small helpers the reaper's phases share: batches of a fixed size, bounded concurrency and
 * progress lines. Reconciles and writes nothing.
 *
 * @module
 */
import type { Logger } from "../task.ts";

/** Log a progress line every this many items of a long phase. */
export const PROGRESS_EVERY = 500;

export function* chunks<T>(items: T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

/** Runs `fn` over the items with at most `limit` in flight; `fn` must not throw. */
export async function forEachLimit<T>(
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
export function progress(log: Logger, label: string, total: number): () => void {
  let n = 0;
  return () => {
    n++;
    if (n % PROGRESS_EVERY === 0 || (n === total && total >= PROGRESS_EVERY)) {
      log.info(`reaper: ${label}: ${n} of ${total}`);
    }
  };
}
