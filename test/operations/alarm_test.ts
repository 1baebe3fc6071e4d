import assert from "node:assert/strict";
import type { MetricAlarm } from "npm:@aws-sdk/client-cloudwatch@3.1164.0";
import { alarmDrift, alarmName, desiredAlarm } from "../../lib/operations/alarm.ts";

const WANT = desiredAlarm({
  namespace: "refresh",
  table: "acme-widgets-ci-table",
  topicArn: "arn:aws:sns:us-east-1:123456789012:ops",
  afterRuns: 3,
  intervalSec: 600,
});

Deno.test("the alarm fires on RunSucceeded below 1 for N intervals, missing data breaching, the topic notified both ways", () => {
  assert.equal(WANT.AlarmName, alarmName("refresh", "acme-widgets-ci-table"));
  assert.deepEqual(
    [
      WANT.MetricName,
      WANT.Statistic,
      WANT.Period,
      WANT.EvaluationPeriods,
      WANT.DatapointsToAlarm,
      WANT.Threshold,
      WANT.ComparisonOperator,
      WANT.TreatMissingData,
    ],
    ["RunSucceeded", "Maximum", 600, 3, 3, 1, "LessThanThreshold", "breaching"],
  );
  assert.deepEqual(WANT.Dimensions, [{ Name: "Pool", Value: "acme-widgets-ci-table" }]);
  assert.deepEqual([WANT.AlarmActions, WANT.OKActions], [
    ["arn:aws:sns:us-east-1:123456789012:ops"],
    ["arn:aws:sns:us-east-1:123456789012:ops"],
  ]);
});

Deno.test("alarmDrift finds nothing in the alarm as put, and names what an operator changed", () => {
  const held = { ...WANT, StateValue: "OK", AlarmArn: "arn:…" } as MetricAlarm;
  assert.deepEqual(alarmDrift(held, WANT), []);
  assert.deepEqual(
    alarmDrift({ ...held, TreatMissingData: "notBreaching", AlarmActions: [] }, WANT),
    ['TreatMissingData "notBreaching" -> "breaching"', "AlarmActions"],
  );
});
