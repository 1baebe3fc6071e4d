/**
 * The operations inputs: metrics and the alarm in CloudWatch, the lease's length, and the loop
 * (`--every`). Reads nothing else; lib/config.ts composes these inputs.
 *
 * @module
 */
import type { InputSpec, Reader } from "../inputs.ts";

/** The operations inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "metrics",
    env: ["REFRESH_METRICS"],
    kind: "string",
    default: "off",
    help:
      "off or cloudwatch: publish the pool's and the run's metrics to CloudWatch each run (PutMetricData) and keep its dashboard",
  },
  {
    name: "metrics-namespace",
    env: ["REFRESH_METRICS_NAMESPACE"],
    kind: "string",
    default: "refresh",
    help: "CloudWatch namespace of the metrics, the alarm and the dashboard's name prefix",
  },
  {
    name: "alarm-topic-arn",
    env: ["REFRESH_ALARM_TOPIC_ARN"],
    kind: "string",
    help:
      "SNS topic (arn:aws:sns:…) an alarm notifies when refresh stops succeeding: no successful run for --alarm-after-runs intervals, missing data counting as failed",
  },
  {
    name: "alarm-after-runs",
    env: ["REFRESH_ALARM_AFTER_RUNS"],
    kind: "int",
    default: "3",
    help: "intervals in a row without a successful run before the alarm fires",
  },
  {
    name: "alarm-interval-sec",
    env: ["REFRESH_ALARM_INTERVAL_SEC"],
    kind: "int",
    help:
      "the interval the alarm judges, in seconds: --every's when set, else 600 (the workflow's schedule); a multiple of 60",
  },
  {
    name: "every",
    env: ["REFRESH_EVERY"],
    kind: "int",
    help:
      "run as a long-lived loop, a cycle every SECONDS (lease renewed across cycles, a standby while another holds it; SIGTERM or SIGINT end it after the cycle in flight, exit 0)",
  },
  {
    name: "lease-sec",
    env: ["REFRESH_LEASE_SEC"],
    kind: "int",
    default: "80",
    help:
      "seconds the run's lease on the pool lasts between renewals; a holder that dies loses it this long plus 30 s after its last renewal",
  },
];

/** The operations section of the desired state. */
export interface DesiredOperations {
  metrics: "off" | "cloudwatch";
  namespace: string;
  alarm: { topicArn: string; afterRuns: number; intervalSec: number } | null;
  /** Seconds between cycles of the loop; null: one run. */
  everySec: number | null;
  leaseSec: number;
}

const TOPIC_ARN = /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$/;

/** Reads the operations inputs, recording problems on the reader. */
export function parseOperations(r: Reader): DesiredOperations {
  const metrics = r.string("metrics") ?? "off";
  if (metrics !== "off" && metrics !== "cloudwatch") {
    r.problems.push(`metrics: expected off or cloudwatch, got ${JSON.stringify(metrics)}`);
  }
  const namespace = r.string("metrics-namespace") ?? "refresh";
  if (!/^[A-Za-z0-9._\-/#:]{1,255}$/.test(namespace) || namespace.startsWith("AWS/")) {
    r.problems.push(
      `metrics-namespace: ${
        JSON.stringify(namespace)
      } is not a CloudWatch namespace (1-255 of letters, digits and . _ - / # :, not AWS/…)`,
    );
  }
  const everySec = r.int("every", 5, 86_400) ?? null;
  const leaseSec = r.int("lease-sec", 10, 3600)!;
  const topicArn = r.string("alarm-topic-arn");
  if (topicArn !== undefined && !TOPIC_ARN.test(topicArn)) {
    r.problems.push(
      `alarm-topic-arn: ${
        JSON.stringify(topicArn)
      } is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)`,
    );
  }
  const afterRuns = r.int("alarm-after-runs", 1, 100)!;
  const given = r.int("alarm-interval-sec", 60, 86_400);
  const intervalSec = given ?? Math.max(60, Math.ceil((everySec ?? 600) / 60) * 60);
  if (given !== undefined && given % 60 !== 0) {
    r.problems.push(`alarm-interval-sec: ${given} is not a multiple of 60 (CloudWatch's periods)`);
  }
  return {
    metrics: metrics === "cloudwatch" ? "cloudwatch" : "off",
    namespace,
    alarm: topicArn === undefined ? null : { topicArn, afterRuns, intervalSec },
    everySec,
    leaseSec,
  };
}
