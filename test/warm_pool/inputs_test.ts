import assert from "node:assert/strict";
import { parseSchedule, type Schedule } from "../../lib/schedule.ts";
import { instanceHoursPerDay, provisionMismatches, warmKey } from "../../lib/warm_pool/inputs.ts";
import { BASE_ARGS, desiredFrom, TEST_PAT } from "../support/aws.ts";
import { checkRefused, type InvalidInput } from "../support/refused.ts";

Deno.test("warm pool inputs: the cost is the minimum times the schedule's hours per day", () => {
  assert.equal(instanceHoursPerDay(2, null), 48);
  const schedule = parseSchedule("Mon-Fri 08:00-19:00 Europe/Berlin") as Schedule;
  // 5 days of 11 hours, over 7 days: 7.86 hours a day, for 3 instances 23.6.
  assert.equal(instanceHoursPerDay(3, schedule), 23.6);
});

Deno.test("warm pool inputs parse from flags and from the config file", () => {
  const flags = desiredFrom([
    "--warm-pool",
    "large=2, xlarge=0",
    "--warm-pool-schedule",
    "Mon-Fri 08:00-19:00 Europe/Berlin",
  ]).warmPool;
  assert.deepEqual(flags.minimum, { large: 2, xlarge: 0 });
  assert.equal(flags.schedule!.text, "Mon-Fri 08:00-19:00 Europe/Berlin");
  assert.equal(flags.holdMin, 30);
  // provision's defaults: usage-class on-demand, allowed-instance-types c*, m*, r*.
  assert.equal(flags.usageClass, "on-demand");
  assert.deepEqual(flags.instanceTypes, ["c*", "m*", "r*"]);
  assert.equal(flags.spotFallback, true);
  const both =
    desiredFrom(["--warm-pool", "large=2,large:spot=1", "--warm-pool-spot-fallback", "off"])
      .warmPool;
  assert.deepEqual(both.minimum, { large: 2, "large:spot": 1 });
  assert.deepEqual(warmKey("large:spot", both.usageClass), { cls: "large", usage: "spot" });
  assert.deepEqual(warmKey("large", both.usageClass), { cls: "large", usage: "on-demand" });
  assert.equal(both.spotFallback, false);
  const file = desiredFrom(["--config", "/pool.json"], { GITHUB_TOKEN: TEST_PAT }, {
    "/pool.json": JSON.stringify({
      "warm-pool": { large: 1, "2xlarge": 3 },
      "warm-pool-hold-min": 30,
      "warm-pool-usage-class": "on-demand",
    }),
  }).warmPool;
  assert.deepEqual(file.minimum, { large: 1, "2xlarge": 3 });
  assert.equal(file.holdMin, 30);
  assert.equal(file.usageClass, "on-demand");
  assert.equal(file.schedule, null);
});

Deno.test("warm pool inputs: a warm pool provision's defaults cannot claim is named, with the inputs to change", () => {
  assert.deepEqual(provisionMismatches(desiredFrom(["--warm-pool", "large=2"]).warmPool), []);
  const spot = desiredFrom([
    "--warm-pool",
    "large=1,xlarge:spot=1",
    "--warm-pool-instance-types",
    "c6i.*,t3.*",
  ]).warmPool;
  assert.deepEqual(provisionMismatches(spot), [
    "large: warm instance types t3.* are outside provision's default allowed-instance-types " +
    "(c*, m*, r*): workflows must list them in allowed-instance-types, or provision puts " +
    "those instances back",
    "xlarge:spot: warm instances are spot, and provision claims only its usage-class (default " +
    "on-demand): workflows of class xlarge must set usage-class: spot, or keep xlarge=N " +
    "(on-demand)",
    "xlarge:spot: warm instance types t3.* are outside provision's default " +
    "allowed-instance-types (c*, m*, r*): workflows must list them in allowed-instance-types, " +
    "or provision puts those instances back",
  ]);
});

const INVALID: InvalidInput[] = [
  [
    "unknown usage class in a key",
    [...BASE_ARGS, "--warm-pool", "large:reserved=2"],
    undefined,
    /warm-pool: "large:reserved" is not CLASS or CLASS:USAGE with USAGE spot or on-demand/,
  ],
  [
    "a key given twice, once by the default usage class",
    [...BASE_ARGS, "--warm-pool", "large=1,large:on-demand=2"],
    undefined,
    /warm-pool: large and large:on-demand both keep on-demand large instances; give one of them/,
  ],
  [
    "bad spot fallback",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-spot-fallback", "maybe"],
    undefined,
    /warm-pool-spot-fallback: expected on or off, got "maybe"/,
  ],
  [
    "unknown class",
    [...BASE_ARGS, "--warm-pool", "huge=2"],
    undefined,
    /warm-pool: unknown resource class "huge"; expected one of large, xlarge/,
  ],
  [
    "bad number",
    [...BASE_ARGS, "--warm-pool", "large=two"],
    undefined,
    /warm-pool: large=two is not a whole number 0-100/,
  ],
  [
    "negative number",
    [...BASE_ARGS, "--warm-pool", "large=-1"],
    undefined,
    /warm-pool: large=-1 is not a whole number 0-100/,
  ],
  [
    "not CLASS=N",
    [...BASE_ARGS, "--warm-pool", "large"],
    undefined,
    /warm-pool: "large" is not CLASS=N \(like large=2\)/,
  ],
  [
    "class twice",
    [...BASE_ARGS, "--warm-pool", "large=1,large=2"],
    undefined,
    /warm-pool: class "large" is given more than once/,
  ],
  [
    "bad schedule",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-schedule", "Mon-Fri 8-19 Europe/Berlin"],
    undefined,
    /warm-pool-schedule: window "Mon-Fri 8-19 Europe\/Berlin": times "8-19" are not HH:MM-HH:MM/,
  ],
  [
    "unknown time zone",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-schedule", "daily 08:00-19:00 Berlin"],
    undefined,
    /warm-pool-schedule: .*unknown time zone "Berlin"/,
  ],
  [
    "schedule without a warm pool",
    [...BASE_ARGS, "--warm-pool-schedule", "daily 08:00-19:00"],
    undefined,
    /warm-pool-schedule: given without --warm-pool/,
  ],
  [
    "usage class",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-usage-class", "reserved"],
    undefined,
    /warm-pool-usage-class: expected spot or on-demand, got "reserved"/,
  ],
  [
    "hold too short",
    [...BASE_ARGS, "--warm-pool", "large=1", "--warm-pool-hold-min", "1"],
    undefined,
    /warm-pool-hold-min: expected a whole number 2-1440, got "1"/,
  ],
];

Deno.test("warm pool refuses invalid inputs with a message and sends no request", (t) =>
  checkRefused(t, INVALID));
