/**
 * The reaper's inputs (lib/reaper/inputs.ts): the pipeline's concurrency and write rate, their
 * defaults, and their refusal when out of range; the grace that guards against EC2's consistency
 * window, never below 5 minutes.
 */
import assert from "node:assert/strict";
import { INPUTS, MIN_CONSISTENCY_GRACE_MIN } from "../../lib/reaper/inputs.ts";
import { BASE_ARGS, desiredFrom } from "../support/aws.ts";
import { checkRefused, type InvalidInput, problemsOf } from "../support/refused.ts";

Deno.test("reaper's concurrency and write rate default to 64 writes in flight and 1,000 per second per partition key", () => {
  const { concurrency, writeRate } = desiredFrom([]).reaper;
  assert.deepEqual({ concurrency, writeRate }, { concurrency: 64, writeRate: 1000 });
  const set = desiredFrom(["--reap-concurrency", "8", "--reap-write-rate", "200"]).reaper;
  assert.deepEqual([set.concurrency, set.writeRate], [8, 200]);
  const env = desiredFrom([], { GITHUB_TOKEN: "x", REFRESH_REAP_WRITE_RATE: "50" }).reaper;
  assert.equal(env.writeRate, 50);
});

const INVALID: InvalidInput[] = [
  [
    "no write in flight",
    [...BASE_ARGS, "--reap-concurrency", "0"],
    undefined,
    /reap-concurrency: expected a whole number 1-256, got "0"/,
  ],
  [
    "a write rate above DynamoDB's per-partition limit",
    [...BASE_ARGS, "--reap-write-rate", "5000"],
    undefined,
    /reap-write-rate: expected a whole number 1-1000, got "5000"/,
  ],
  [
    "a fractional write rate",
    [...BASE_ARGS, "--reap-write-rate", "2.5"],
    undefined,
    /reap-write-rate: expected a whole number 1-1000, got "2.5"/,
  ],
];

Deno.test("reaper's concurrency and write rate are refused with a message when out of range, and no request is sent", (t) =>
  checkRefused(t, INVALID));

Deno.test("reaper refuses an orphan grace below EC2's consistency window: exit 2, no call", async (t) => {
  assert.equal(MIN_CONSISTENCY_GRACE_MIN, 5);
  await checkRefused(t, [
    [
      "--orphan-grace-min 4",
      [...BASE_ARGS, "--orphan-grace-min", "4"],
      undefined,
      /orphan-grace-min: expected a whole number >= 5, got "4"$/m,
    ],
    [
      "REFRESH_ORPHAN_GRACE_MIN=1",
      BASE_ARGS,
      { GITHUB_TOKEN: "x", REFRESH_ORPHAN_GRACE_MIN: "1" },
      /orphan-grace-min: expected a whole number >= 5, got "1"$/m,
    ],
  ]);
  assert.throws(
    () => problemsOf([...BASE_ARGS, "--orphan-grace-min", "5"]),
    /expected a ConfigError/,
  );
});

Deno.test("the orphan grace's help says its minimum and why", () => {
  const spec = INPUTS.find((i) => i.name === "orphan-grace-min")!;
  assert.match(
    spec.help,
    /at least 5, as EC2 may list a just-launched instance only minutes later/,
  );
});
