/**
 * The pool's CloudWatch dashboard (with `--metrics cloudwatch`): `<namespace>-<table>`, one
 * widget each for idle, busy and booting instances per class, the warm pool (ready against its
 * minimum), interruptions and spot fallbacks, run success and duration, and instances reaped.
 * Reconciled like every task: put when missing or when its body differs.
 *
 * Writes: PutDashboard (when missing or different).
 *
 * @module
 */
import {
  type CloudWatchClient,
  GetDashboardCommand,
  PutDashboardCommand,
  ResourceNotFound,
} from "npm:@aws-sdk/client-cloudwatch@3.1164.0";

/** The dashboard's name for a pool (letters, digits, - and _ only). */
export function dashboardName(namespace: string, table: string): string {
  return `${namespace}-${table}`.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 255);
}

/** Where an operator opens it. */
export function dashboardUrl(region: string, name: string): string {
  return `https://${region}.console.aws.amazon.com/cloudwatch/home?region=${region}#dashboards/dashboard/${name}`;
}

/** The dashboard's body (CloudWatch's JSON), the same for the same inputs. */
export function dashboardBody(input: {
  namespace: string;
  table: string;
  region: string;
  classes: string[];
}): string {
  const { namespace, table, region } = input;
  const perClass = (metric: string, stat = "Maximum") =>
    input.classes.map((cls) => [namespace, metric, "Pool", table, "ResourceClass", cls, {
      stat,
      label: cls,
    }]);
  const widget = (title: string, metrics: unknown[], x: number, y: number) => ({
    type: "metric",
    x,
    y,
    width: 12,
    height: 6,
    properties: { title, region, view: "timeSeries", stacked: false, period: 300, metrics },
  });
  const pool = (metric: string, stat: string) => [namespace, metric, "Pool", table, { stat }];
  // The warm pool's metrics carry a UsageClass too: one line per class and usage class.
  const warm = (metric: string, stat: string, label: string) => [{
    expression:
      `SEARCH('{${namespace},Pool,ResourceClass,UsageClass} Pool="${table}" MetricName="${metric}"', '${stat}', 300)`,
    label,
  }];
  return JSON.stringify({
    widgets: [
      widget("Idle instances", perClass("IdleInstances"), 0, 0),
      widget("Busy instances (claimed or running)", perClass("BusyInstances"), 12, 0),
      widget("Booting instances", perClass("BootingInstances"), 0, 6),
      widget(
        "Warm pool: ready and minimum",
        [
          warm("WarmReady", "Maximum", "ready"),
          warm("WarmMinimum", "Maximum", "minimum"),
        ],
        12,
        6,
      ),
      widget(
        "Spot: interruptions and fallbacks to on-demand",
        [
          warm("Interruptions", "Sum", "interrupted"),
          warm("SpotFallbacks", "Sum", "fell back"),
        ],
        0,
        12,
      ),
      widget(
        "Runs: success and duration",
        [
          pool("RunSucceeded", "Minimum"),
          [...pool("RunSeconds", "Maximum").slice(0, 4), { stat: "Maximum", yAxis: "right" }],
        ],
        12,
        12,
      ),
      widget(
        "Reaped instances and orphans",
        [
          pool("ReapedInstances", "Sum"),
          pool("OrphansTerminated", "Sum"),
        ],
        0,
        18,
      ),
    ],
  });
}

/** Puts the dashboard when missing or different; what it did, for the report. */
export async function reconcileDashboard(
  cloudwatch: CloudWatchClient,
  name: string,
  body: string,
  dryRun: boolean,
): Promise<string> {
  let held: string | undefined;
  try {
    held = (await cloudwatch.send(new GetDashboardCommand({ DashboardName: name })))
      .DashboardBody;
  } catch (error) {
    if (!(error instanceof ResourceNotFound) && (error as Error).name !== "ResourceNotFound") {
      throw error;
    }
  }
  if (held !== undefined && sameJson(held, body)) return `dashboard ${name} in place`;
  const verb = held === undefined ? "created" : "updated";
  if (dryRun) return `dashboard ${name} would be ${verb}`;
  await cloudwatch.send(new PutDashboardCommand({ DashboardName: name, DashboardBody: body }));
  return `dashboard ${name} ${verb}`;
}

function sameJson(a: string, b: string): boolean {
  try {
    return JSON.stringify(JSON.parse(a)) === JSON.stringify(JSON.parse(b));
  } catch {
    return false;
  }
}
