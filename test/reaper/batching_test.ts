/**
 * The reaper's batching (lib/reaper/batching.ts): the pipeline's stage, which starts a batch as
 * soon as it is full, keeps groups apart, bounds what is in flight and sends the rest at close.
 */
import assert from "node:assert/strict";
import { Batcher } from "../../lib/reaper/batching.ts";

/** A promise and its resolver. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => open = resolve);
  return { open, opened };
}

Deno.test("Batcher starts a batch as soon as it is full and the partial ones at close: as many batches as chunking everything at the end", async () => {
  const started: number[][] = [];
  const batcher = new Batcher<number>(3, 4, (batch) => {
    started.push(batch);
    return Promise.resolve();
  });
  batcher.add([1, 2]);
  assert.deepEqual(started, []);
  batcher.add([3, 4]);
  assert.deepEqual(started, [[1, 2, 3]], "the full batch starts before close");
  batcher.add([5, 6, 7]);
  assert.deepEqual(started, [[1, 2, 3], [4, 5, 6]]);
  await batcher.close();
  assert.deepEqual(started, [[1, 2, 3], [4, 5, 6], [7]]);
  assert.throws(() => batcher.add([8]), /closed stage/);
});

Deno.test("Batcher keeps groups apart and never has more than its limit of batches in flight", async () => {
  const started: string[][] = [];
  let inFlight = 0;
  let most = 0;
  const hold = gate();
  const batcher = new Batcher<string>(2, 2, async (batch) => {
    started.push(batch);
    most = Math.max(most, ++inFlight);
    await hold.opened;
    inFlight--;
  }, (item) => item[0]);
  batcher.add(["a1", "b1", "a2", "b2", "a3", "a4"]);
  assert.deepEqual(started, [["a1", "a2"], ["b1", "b2"]], "the third full batch waits for a slot");
  const closed = batcher.close();
  hold.open();
  await closed;
  assert.deepEqual(started, [["a1", "a2"], ["b1", "b2"], ["a3", "a4"]]);
  assert.equal(most, 2);
});

Deno.test("Batcher's close waits for every batch and rethrows a batch's failure", async () => {
  const batcher = new Batcher<number>(
    1,
    1,
    (batch) => batch[0] === 2 ? Promise.reject(new Error("batch 2 broke")) : Promise.resolve(),
  );
  batcher.add([1, 2, 3]);
  await assert.rejects(batcher.close(), /batch 2 broke/);
});
