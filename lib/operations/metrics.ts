/**
 * The run's and the pool's metrics, as CloudWatch data (`--metrics cloudwatch`): built from the
 * run's report, so they say exactly what the run found (the reaper's read of the table, the warm
 * pool's view), then published with as few PutMetricData calls as CloudWatch allows (one for up to
 * 1,000 values). Every datum has the dimension `Pool=<table>`; the per-class ones also
 * `ResourceClass=<class>` (and the warm pool's `UsageClass`).
 *
 * Writes: PutMetricData.
 *
 * @module
 */
import {
  type CloudWatchClient,
  type MetricDatum,
  PutMetricDataCommand,
  type StandardUnit,
} from "npm:@aws-sdk/client-cloudwatch@3.1164.0";
import type { RunReport } from "../report.ts";
import type { PoolView } from "../rollout.ts";
import type { WarmView } from "../warm_pool.ts";
import type { LaunchToRunner } from "../reaper/drain.ts";

/** PutMetricData takes at most 1,000 values a call. */
const PER_CALL = 1000;

/** The metrics of a run, as CloudWatch takes them. */
export function runMetrics(
  report: RunReport,
  runSeconds: number,
  at: Date,
  rateLimitRemaining?: number,
): MetricDatum[] {
  const pool = [{ Name: "Pool", Value: report.table }];
  const datum = (
    name: string,
    value: number,
    unit: StandardUnit = "Count",
    more: { Name: string; Value: string }[] = [],
  ): MetricDatum => ({
    MetricName: name,
    Dimensions: [...pool, ...more],
    Timestamp: at,
    Value: value,
    Unit: unit,
  });
  const found = (task: string) => report.results.find((r) => r.task === task)?.found;
  const reaper = found("reaper") as Record<string, unknown> | undefined;
  const data = [
    datum("RunSucceeded", report.exitCode === 0 ? 1 : 0),
    datum("RunSeconds", Math.round(runSeconds * 10) / 10, "Seconds"),
    datum("TaskFailures", report.results.filter((r) => r.status === "failed").length),
  ];
  if (reaper) {
    data.push(datum("ReapedInstances", Number(reaper.terminated ?? 0)));
    data.push(datum("OrphansTerminated", Number(reaper.orphans ?? 0)));
    // How long jobs waited for a cold instance: launch to first UD_REG_OK (sweep runs, where
    // the launch times are known), as one statistic set.
    const waits = reaper.launchToRunner as LaunchToRunner | undefined;
    if (waits) {
      data.push({
        MetricName: "LaunchToRunnerSeconds",
        Dimensions: pool,
        Timestamp: at,
        Unit: "Seconds",
        StatisticValues: {
          SampleCount: waits.count,
          Sum: waits.sum,
          Minimum: waits.min,
          Maximum: waits.max,
        },
      });
    }
    const view = reaper.pool as PoolView | undefined;
    for (const [cls, c] of Object.entries(view?.classes ?? {})) {
      const rc = [{ Name: "ResourceClass", Value: cls }];
      data.push(datum("IdleInstances", c.idle, "Count", rc));
      data.push(datum("BusyInstances", c.claimed + c.running, "Count", rc));
      data.push(datum("BootingInstances", c.created, "Count", rc));
    }
  }
  const warm = found("warm-pool")?.warm as WarmView | undefined;
  for (const c of Object.values(warm?.classes ?? {})) {
    const rc = [
      { Name: "ResourceClass", Value: c.resourceClass },
      { Name: "UsageClass", Value: c.usageClass },
    ];
    data.push(datum("WarmReady", c.ready, "Count", rc));
    data.push(datum("WarmMinimum", c.minimum, "Count", rc));
    data.push(datum("Interruptions", c.interrupted, "Count", rc));
    data.push(datum("SpotFallbacks", c.fellBack?.count ?? 0, "Count", rc));
  }
  if (rateLimitRemaining !== undefined) {
    data.push(datum("GithubRateLimitRemaining", rateLimitRemaining));
  }
  return data;
}

/** Publishes `data` in `namespace`; returns the number of PutMetricData calls made. */
export async function publishMetrics(
  cloudwatch: CloudWatchClient,
  namespace: string,
  data: MetricDatum[],
): Promise<number> {
  let calls = 0;
  for (let i = 0; i < data.length; i += PER_CALL) {
    await cloudwatch.send(
      new PutMetricDataCommand({ Namespace: namespace, MetricData: data.slice(i, i + PER_CALL) }),
    );
    calls++;
  }
  return calls;
}
