/**
 * The pace of the reaper's DynamoDB writes: every write (a lock, an item of a BatchWriteItem)
 * takes a token from its partition key's bucket ({@link WritePacer}), so no key receives more
 * than `--reap-write-rate` writes per second (DynamoDB serves about 1,000 write units per second
 * per partition; every record shares the partition key `TYPE#INSTANCE`). When DynamoDB throttles
 * anyway (a provisioned table with less capacity, a hot partition shared with other keys), the
 * key's rate is halved and recovers as writes succeed, and the write is retried after a growing,
 * jittered wait ({@link backoffMs}). The SDK has already retried each throttled request itself
 * (standard retry mode, refresh.ts): this is the second line, across requests. Reconciles and
 * writes nothing.
 *
 * @module
 */

/** DynamoDB's throttling errors (the SDK's own list for DynamoDB, less those of other services). */
const THROTTLES = new Set([
  "ProvisionedThroughputExceededException",
  "ThrottlingException",
  "RequestLimitExceeded",
  "Throttling",
]);

/** Whether an error is DynamoDB refusing a request for its rate (to retry later, slower). */
export function isThrottle(error: unknown): boolean {
  return THROTTLES.has((error as { name?: string })?.name ?? "");
}

/** The wait before retry `attempt` (1, 2, …): 100 ms doubling to at most 5 s, with jitter. */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  return Math.min(50 * 2 ** attempt, 5000) * (0.5 + random());
}

/** The lowest rate a throttled partition key is slowed to, in writes per second. */
const MIN_RATE = 10;
/** A bucket holds this share of a second's writes: writes are spread, not sent in bursts. */
const BURST = 0.1;

interface Bucket {
  /** Writes per second now (halved on throttling, recovering as writes succeed). */
  rate: number;
  tokens: number;
  /** When `tokens` was last filled, on the pacer's clock. */
  at: number;
}

/**
 * A token bucket per partition key. {@link take} waits until `units` writes may go; a key that
 * was never used starts with a full bucket. The clock is monotonic milliseconds; tests pass
 * their own clock and sleep.
 */
export class WritePacer {
  readonly #max: number;
  readonly #clock: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #buckets = new Map<string, Bucket>();

  constructor(
    /** Writes per second per partition key at most. */
    ratePerSec: number,
    clock: () => number = () => performance.now(),
    sleep: (ms: number) => Promise<void> = (ms) =>
      new Promise((resolve) => setTimeout(resolve, ms)),
  ) {
    this.#max = ratePerSec;
    this.#clock = clock;
    this.#sleep = sleep;
  }

  /** Waits until `units` writes to `key` may be sent, and takes them. */
  async take(key: string, units: number): Promise<void> {
    const bucket = this.#bucket(key);
    for (;;) {
      this.#fill(bucket);
      // A request bigger than the bucket goes once the bucket is full (it cannot wait for more).
      const need = Math.min(units, this.#capacity(bucket));
      if (bucket.tokens >= need) {
        bucket.tokens -= units;
        return;
      }
      await this.#sleep(Math.ceil(((need - bucket.tokens) / bucket.rate) * 1000));
    }
  }

  /** DynamoDB throttled a write to `key`: halve its rate. */
  throttled(key: string): void {
    const bucket = this.#bucket(key);
    this.#fill(bucket);
    bucket.rate = Math.max(MIN_RATE, bucket.rate / 2);
    bucket.tokens = Math.min(bucket.tokens, this.#capacity(bucket));
  }

  /** `units` writes to `key` succeeded: its rate recovers by as many writes per second. */
  succeeded(key: string, units: number): void {
    const bucket = this.#bucket(key);
    bucket.rate = Math.min(this.#max, bucket.rate + units);
  }

  /** The current rate of `key`, in writes per second. */
  rate(key: string): number {
    return this.#bucket(key).rate;
  }

  #bucket(key: string): Bucket {
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      bucket = { rate: this.#max, tokens: 0, at: this.#clock() };
      bucket.tokens = this.#capacity(bucket);
      this.#buckets.set(key, bucket);
    }
    return bucket;
  }

  #capacity(bucket: Bucket): number {
    return Math.max(1, bucket.rate * BURST);
  }

  #fill(bucket: Bucket): void {
    const now = this.#clock();
    bucket.tokens = Math.min(
      this.#capacity(bucket),
      bucket.tokens + ((now - bucket.at) / 1000) * bucket.rate,
    );
    bucket.at = now;
  }
}
