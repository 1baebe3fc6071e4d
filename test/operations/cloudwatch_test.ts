/**
 * Metrics, the alarm and the dashboard end to end (refresh.ts with lib/operations/) against
 * moto's CloudWatch: off by default, the pool's counts as the table holds them, one alarm put
 * once, nothing put again by the next run.
 */
import assert from "node:assert/strict";
import {
  CloudWatchClient,
  DescribeAlarmsCommand,
  GetMetricStatisticsCommand,
} from "npm:@aws-sdk/client-cloudwatch@3.1164.0";
import { PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { item } from "../../lib/contract.ts";
import { baseArgs, TEMPLATE_ARGS, TEST_PAT } from "../support/aws.ts";
import { startFakeGithub } from "../support/github.ts";
import { MOTO_URL, resetMoto } from "../support/moto.ts";
import {
  fleetInstanceIds,
  launchAsProvision,
  motoClients,
  refreshJson,
  TABLE,
} from "../support/pool.ts";

const TOPIC = "arn:aws:sns:us-east-1:123456789012:refresh-ops";

Deno.test("metrics: none by default; with --metrics cloudwatch the idle and busy counts are the table's and RunSucceeded 1; --alarm-topic-arn puts one alarm, untouched by the next run", async () => {
  const network = await resetMoto();
  await using gh = startFakeGithub({ tokens: [TEST_PAT] });
  const { ec2, ddb, destroy } = motoClients();
  const cloudwatch = new CloudWatchClient({
    endpoint: MOTO_URL,
    region: "us-east-1",
    credentials: { accessKeyId: "testing", secretAccessKey: "testing" },
  });
  try {
    const args = [
      ...baseArgs(network),
      ...TEMPLATE_ARGS,
      "--github-api-url",
      gh.url,
      "--only",
      "table,launch-template,resource-pools,parameters,reaper",
    ];
    const plain = await refreshJson(args);
    assert.equal(plain.code, 0, JSON.stringify(plain.report.results, null, 1));
    assert.deepEqual(
      Object.keys(plain.report.calls).filter((c) => c.startsWith("CloudWatch.")),
      [],
    );
    assert.equal(plain.report.operations, undefined);

    // Two idle instances and one running a job, as provision and release leave them.
    const ids = fleetInstanceIds(
      await launchAsProvision(ec2, { runId: "77", subnetId: network.subnetIds[0], count: 3 }),
    );
    const now = new Date();
    const inTen = new Date(now.getTime() + 10 * 60_000).toISOString().replace(/\.\d+Z$/, "Z");
    for (const [i, id] of ids.entries()) {
      const state = i < 2 ? "idle" : "running";
      const runId = state === "running" ? "77" : "";
      const put = (entity: "INSTANCE" | "HEARTBEAT" | "WS", fields: Record<string, unknown>) =>
        ddb.send(new PutCommand({ TableName: TABLE, Item: item(entity, id, now, fields) }));
      await put("INSTANCE", {
        state,
        runId,
        threshold: inTen,
        resourceClass: "large",
        instanceType: "m5.large",
        usageClass: "on-demand",
      });
      await put("HEARTBEAT", { value: "PING" });
      await put("WS", { value: { state: "UD_REG_OK", runId } });
    }

    const ops = [...args, "--metrics", "cloudwatch", "--alarm-topic-arn", TOPIC];
    const measured = await refreshJson(ops);
    assert.equal(measured.code, 0, JSON.stringify(measured.report.results, null, 1));
    assert.equal(measured.report.calls["CloudWatch.PutMetricData"], 1);
    assert.match(measured.report.operations!.join("\n"), /^alarm .* created$/m);
    assert.match(measured.report.operations!.join("\n"), /^dashboard .* created: https:\/\//m);
    const stat = async (metric: string, dims: Record<string, string>) => {
      const out = await cloudwatch.send(
        new GetMetricStatisticsCommand({
          Namespace: "refresh",
          MetricName: metric,
          Dimensions: Object.entries(dims).map(([Name, Value]) => ({ Name, Value })),
          StartTime: new Date(now.getTime() - 3_600_000),
          EndTime: new Date(Date.now() + 3_600_000),
          Period: 60,
          Statistics: ["Maximum"],
        }),
      );
      return Math.max(...(out.Datapoints ?? []).map((d) => d.Maximum ?? -1));
    };
    const large = { Pool: TABLE, ResourceClass: "large" };
    assert.equal(await stat("IdleInstances", large), 2);
    assert.equal(await stat("BusyInstances", large), 1);
    assert.equal(await stat("RunSucceeded", { Pool: TABLE }), 1);

    const alarms = await cloudwatch.send(new DescribeAlarmsCommand({}));
    assert.equal(alarms.MetricAlarms?.length, 1);
    const alarm = alarms.MetricAlarms![0];
    assert.deepEqual(
      [alarm.MetricName, alarm.TreatMissingData, alarm.AlarmActions],
      ["RunSucceeded", "breaching", [TOPIC]],
    );

    // The next run: the alarm and the dashboard are in place; only the metrics are written.
    const again = await refreshJson(ops);
    assert.equal(again.code, 0);
    const cw = Object.entries(again.report.calls).filter(([c]) => c.startsWith("CloudWatch."));
    assert.deepEqual(Object.fromEntries(cw), {
      "CloudWatch.DescribeAlarms": 1,
      "CloudWatch.GetDashboard": 1,
      "CloudWatch.PutMetricData": 1,
    });
    assert.equal((await cloudwatch.send(new DescribeAlarmsCommand({}))).MetricAlarms?.length, 1);
    assert.equal(again.report.writeCalls, 0, JSON.stringify(again.report.calls));
  } finally {
    destroy();
    cloudwatch.destroy();
  }
});
