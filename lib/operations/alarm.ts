/**
 * The alarm that says refresh stopped (`--alarm-topic-arn`): one CloudWatch alarm per pool,
 * `<namespace>-<table>-refresh-stopped`, on the metric `RunSucceeded` (`Pool=<table>`), its
 * maximum per interval below 1 for `--alarm-after-runs` intervals in a row, missing data counting
 * as breaching: a schedule that stopped, runs that keep failing and revoked credentials (no run
 * publishes anything) all notify the topic, and so does its recovery. Reconciled like every task:
 * created when missing, put again only when what CloudWatch holds drifted from it.
 *
 * Writes: PutMetricAlarm (when missing or drifted).
 *
 * @module
 */
import {
  type CloudWatchClient,
  DescribeAlarmsCommand,
  type MetricAlarm,
  PutMetricAlarmCommand,
  type PutMetricAlarmCommandInput,
} from "npm:@aws-sdk/client-cloudwatch@3.1164.0";

/** The alarm's name for a pool. */
export function alarmName(namespace: string, table: string): string {
  return `${namespace}-${table}-refresh-stopped`.slice(0, 255);
}

/** The alarm as refresh wants it. */
export function desiredAlarm(input: {
  namespace: string;
  table: string;
  topicArn: string;
  afterRuns: number;
  intervalSec: number;
}): PutMetricAlarmCommandInput {
  return {
    AlarmName: alarmName(input.namespace, input.table),
    AlarmDescription: `refresh has not succeeded on pool ${input.table} for ${input.afterRuns} ` +
      `intervals of ${input.intervalSec} s (no run, or only failed ones). Managed by refresh.`,
    Namespace: input.namespace,
    MetricName: "RunSucceeded",
    Dimensions: [{ Name: "Pool", Value: input.table }],
    Statistic: "Maximum",
    Period: input.intervalSec,
    EvaluationPeriods: input.afterRuns,
    DatapointsToAlarm: input.afterRuns,
    Threshold: 1,
    ComparisonOperator: "LessThanThreshold",
    TreatMissingData: "breaching",
    ActionsEnabled: true,
    AlarmActions: [input.topicArn],
    OKActions: [input.topicArn],
  };
}

/** What differs between the alarm CloudWatch holds and the desired one (empty: nothing). */
export function alarmDrift(held: MetricAlarm, want: PutMetricAlarmCommandInput): string[] {
  const fields = [
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Statistic",
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "ActionsEnabled",
  ] as const;
  const drift: string[] = fields.filter((f) => held[f] !== want[f]).map((f) =>
    `${f} ${JSON.stringify(held[f])} -> ${JSON.stringify(want[f])}`
  );
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  const dims = (d?: { Name?: string; Value?: string }[]) =>
    (d ?? []).map((x) => `${x.Name}=${x.Value}`).sort();
  if (!same(dims(held.Dimensions), dims(want.Dimensions))) drift.push("Dimensions");
  for (const f of ["AlarmActions", "OKActions"] as const) {
    if (!same([...(held[f] ?? [])].sort(), [...(want[f] ?? [])].sort())) drift.push(f);
  }
  return drift;
}

/** Creates the alarm when missing, puts it again on drift; what it did, for the report. */
export async function reconcileAlarm(
  cloudwatch: CloudWatchClient,
  want: PutMetricAlarmCommandInput,
  dryRun: boolean,
): Promise<string> {
  const out = await cloudwatch.send(new DescribeAlarmsCommand({ AlarmNames: [want.AlarmName!] }));
  const held = out.MetricAlarms?.[0];
  const drift = held ? alarmDrift(held, want) : ["missing"];
  if (drift.length === 0) return `alarm ${want.AlarmName} in place`;
  const verb = held ? `updated (${drift.join(", ")})` : "created";
  if (dryRun) return `alarm ${want.AlarmName} would be ${verb}`;
  await cloudwatch.send(new PutMetricAlarmCommand(want));
  return `alarm ${want.AlarmName} ${verb}`;
}
