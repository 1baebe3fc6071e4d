/**
 * The pace of the reaper's writes (lib/reaper/pace.ts): the rate per partition key, its halving
 * when DynamoDB throttles and its recovery, the backoff between retries. On a fake clock.
 */
import assert from "node:assert/strict";
import { backoffMs, isThrottle, WritePacer } from "../../lib/reaper/pace.ts";

/** A clock that only moves when the pacer sleeps. */
function fakeTime() {
  let now = 0;
  return {
    clock: () => now,
    sleep: (ms: number) => {
      now += ms;
      return Promise.resolve();
    },
    elapsed: () => now,
  };
}

Deno.test("WritePacer lets no partition key take more writes per second than its rate, and keys do not wait for each other", async () => {
  const time = fakeTime();
  const pacer = new WritePacer(100, time.clock, time.sleep);
  // A bucket holds a tenth of a second's writes: 10 go at once, the other 990 at 100 per second.
  for (let i = 0; i < 1000; i++) await pacer.take("TYPE#INSTANCE", 1);
  assert.ok(time.elapsed() >= 9_900 && time.elapsed() <= 9_950, `${time.elapsed()} ms`);
  const before = time.elapsed();
  for (let i = 0; i < 10; i++) await pacer.take("TYPE#HEARTBEAT", 1);
  assert.equal(time.elapsed(), before, "another key's bucket is full");
});

Deno.test("WritePacer sends a request bigger than the bucket once it is full, and counts all of it", async () => {
  const time = fakeTime();
  const pacer = new WritePacer(100, time.clock, time.sleep);
  await pacer.take("TYPE#WS", 25); // 25 items, a bucket of 10
  assert.equal(time.elapsed(), 0);
  await pacer.take("TYPE#WS", 1); // waits for the 15 overdrawn and 1 more: 160 ms
  assert.ok(time.elapsed() >= 150 && time.elapsed() <= 170, `${time.elapsed()} ms`);
});

Deno.test("WritePacer halves a throttled key's rate, down to 10 per second, and recovers it as writes succeed", () => {
  const pacer = new WritePacer(1000);
  pacer.throttled("TYPE#INSTANCE");
  assert.equal(pacer.rate("TYPE#INSTANCE"), 500);
  assert.equal(pacer.rate("TYPE#WS"), 1000);
  for (let i = 0; i < 10; i++) pacer.throttled("TYPE#INSTANCE");
  assert.equal(pacer.rate("TYPE#INSTANCE"), 10);
  pacer.succeeded("TYPE#INSTANCE", 25);
  assert.equal(pacer.rate("TYPE#INSTANCE"), 35);
  pacer.succeeded("TYPE#INSTANCE", 5000);
  assert.equal(pacer.rate("TYPE#INSTANCE"), 1000);
});

Deno.test("backoffMs doubles from about 100 ms to at most 5 s, with jitter of half either way", () => {
  assert.equal(backoffMs(1, () => 0.5), 100);
  assert.equal(backoffMs(2, () => 0.5), 200);
  assert.equal(backoffMs(7, () => 0.5), 5000);
  assert.equal(backoffMs(1, () => 0), 50);
  assert.equal(backoffMs(1, () => 0.999), 149.9);
});

Deno.test("isThrottle knows DynamoDB's throttling errors and nothing else", () => {
  for (const name of ["ProvisionedThroughputExceededException", "ThrottlingException"]) {
    assert.ok(isThrottle(Object.assign(new Error("slow down"), { name })), name);
  }
  for (const name of ["ConditionalCheckFailedException", "AccessDeniedException", "Error"]) {
    assert.ok(!isThrottle(Object.assign(new Error("no"), { name })), name);
  }
  assert.ok(!isThrottle(undefined));
});
