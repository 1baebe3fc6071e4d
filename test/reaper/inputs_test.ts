/** The reaper's inputs (lib/reaper/inputs.ts): the graces that guard against EC2's consistency window. */
import assert from "node:assert/strict";
import { INPUTS, MIN_CONSISTENCY_GRACE_MIN } from "../../lib/reaper/inputs.ts";
import { BASE_ARGS } from "../support/aws.ts";
import { checkRefused, problemsOf } from "../support/refused.ts";

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
