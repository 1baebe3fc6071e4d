/**
 * What the reaper's phases share to batch their work: batches of a fixed size, bounded
 * concurrency, progress lines, and the pipeline's stage ({@link Batcher}: batches that start as
 * soon as they are full). Reconciles and writes nothing.
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

/**
 * A counter that logs every {@link PROGRESS_EVERY} steps of a long phase, and its end when
 * `total` (known in advance) is reached.
 */
export function progress(log: Logger, label: string, total?: number): () => void {
  let n = 0;
  return () => {
    n++;
    if (n === total && total >= PROGRESS_EVERY) log.info(`reaper: ${label}: ${n} of ${total}`);
    else if (n % PROGRESS_EVERY === 0) {
      log.info(`reaper: ${label}: ${n}${total === undefined ? "" : ` of ${total}`}`);
    }
  };
}

/**
 * A stage of the reaper's pipeline: items arrive over time ({@link add}), are grouped (by
 * `groupOf`) into batches of `size`, and each full batch is handed to `run` at once, with at most
 * `limit` batches in flight; {@link close} hands over what is left, partial batches included, and
 * resolves once every batch is done. So a stage makes exactly as many requests as batching
 * everything at the end would, and starts them as soon as they are full. `run` must not throw:
 * it records its own failures (a throw is kept and rethrown by {@link close}).
 */
export class Batcher<T> {
  readonly #size: number;
  readonly #limit: number;
  readonly #run: (batch: T[]) => Promise<void>;
  readonly #groupOf: (item: T) => string;
  readonly #pending = new Map<string, T[]>();
  readonly #ready: T[][] = [];
  #running = 0;
  #closed = false;
  #failure: unknown;
  #idle: (() => void) | undefined;

  constructor(
    size: number,
    limit: number,
    run: (batch: T[]) => Promise<void>,
    groupOf: (item: T) => string = () => "",
  ) {
    this.#size = size;
    this.#limit = limit;
    this.#run = run;
    this.#groupOf = groupOf;
  }

  /** Queues items; every batch they fill starts as soon as a slot is free. */
  add(items: Iterable<T>): void {
    if (this.#closed) throw new Error("reaper pipeline: items added to a closed stage");
    for (const item of items) {
      const group = this.#groupOf(item);
      const pending = this.#pending.get(group) ?? [];
      pending.push(item);
      if (pending.length === this.#size) {
        this.#ready.push(pending);
        this.#pending.delete(group);
      } else this.#pending.set(group, pending);
    }
    this.#pump();
  }

  /** Hands over the partial batches and waits until every batch is done. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#ready.push(...this.#pending.values());
    this.#pending.clear();
    this.#pump();
    if (this.#running > 0) await new Promise<void>((resolve) => this.#idle = resolve);
    if (this.#failure !== undefined) throw this.#failure;
  }

  #pump(): void {
    while (this.#running < this.#limit && this.#ready.length) {
      const batch = this.#ready.shift()!;
      this.#running++;
      this.#run(batch).catch((error) => this.#failure ??= error).finally(() => {
        this.#running--;
        this.#pump();
        if (this.#running === 0 && this.#ready.length === 0 && this.#closed) this.#idle?.();
      });
    }
  }
}
