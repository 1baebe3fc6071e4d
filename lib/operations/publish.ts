/**
 * What a run does after its tasks, in CloudWatch (lib/operations/): with `--alarm-topic-arn` the
 * alarm (alarm.ts), with `--metrics cloudwatch` the dashboard (dashboard.ts) and the run's metrics
 * (metrics.ts). None of them changes the run's exit code: each failure is a line of the report.
 *
 * Writes: PutMetricAlarm and PutDashboard (when missing or drifted), PutMetricData.
 *
 * @module
 */
import type { CloudWatchClient } from "npm:@aws-sdk/client-cloudwatch@3.1164.0";
import type { RunReport } from "../report.ts";
import { describeError } from "../task.ts";
import { desiredAlarm, reconcileAlarm } from "./alarm.ts";
import { dashboardBody, dashboardName, dashboardUrl, reconcileDashboard } from "./dashboard.ts";
import type { DesiredOperations } from "./inputs.ts";
import { publishMetrics, runMetrics } from "./metrics.ts";

/** Whether a run has anything to do in CloudWatch (else no client is built, no call made). */
export function wantsCloudWatch(ops: DesiredOperations): boolean {
  return ops.metrics === "cloudwatch" || ops.alarm !== null;
}

/** The alarm, the dashboard and the metrics of a finished run; lines for its report. */
export async function publishRun(cloudwatch: CloudWatchClient, input: {
  ops: DesiredOperations;
  table: string;
  region: string;
  classes: string[];
  dryRun: boolean;
  report: RunReport;
  runSeconds: number;
  rateLimitRemaining?: number;
}): Promise<string[]> {
  const { ops, table, region, dryRun } = input;
  const failed = (what: string) => (error: unknown) => `${what}: failed: ${describeError(error)}`;
  const lines: string[] = [];
  if (ops.alarm) {
    const want = desiredAlarm({ namespace: ops.namespace, table, ...ops.alarm });
    lines.push(await reconcileAlarm(cloudwatch, want, dryRun).catch(failed("alarm")));
  }
  if (ops.metrics !== "cloudwatch") return lines;
  const name = dashboardName(ops.namespace, table);
  const body = dashboardBody({ namespace: ops.namespace, table, region, classes: input.classes });
  const done = await reconcileDashboard(cloudwatch, name, body, dryRun).catch(failed("dashboard"));
  lines.push(`${done}: ${dashboardUrl(region, name)}`);
  if (dryRun) return lines;
  const data = runMetrics(input.report, input.runSeconds, new Date(), input.rateLimitRemaining);
  lines.push(
    await publishMetrics(cloudwatch, ops.namespace, data).then(
      (calls) => `metrics: ${data.length} values published (${calls} PutMetricData)`,
      failed("metrics"),
    ),
  );
  return lines;
}
