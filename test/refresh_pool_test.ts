/**
 * The pool end to end, as issue 11 first tried it: refresh (its entry, every task, the generated
 * bootstrap) builds the pool; an instance is launched as fleet-actions' provision launches one
 * (CreateFleet from refresh's template); the user data of the template's default version runs
 * with bash under the harness, unchanged; the control plane plays provision and release; then
 * refresh's reaper takes the expired instance away, and another refresh run writes nothing.
 *
 * Against moto, the fake GitHub (which hands out the registration token and serves the runner
 * release the checksums come from), the fake runner package (which accepts only the token GitHub
 * handed out) and a fake instance-metadata server answering the instance's id and EC2 tags. The
 * script keeps the protocol's default timings, so the times logged are what provision and
 * release would wait on this harness.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DescribeInstancesCommand } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { type DynamoDBDocumentClient, QueryCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { DEFAULT_RUNNER_VERSION } from "../lib/user_data.ts";
import { poolRunnerLabel } from "../lib/contract.ts";
import type { RunReport } from "../lib/report.ts";
import { TEST_PAT } from "./support/aws.ts";
import { runUserData } from "./support/bootstrap_instance.ts";
import { ControlPlane, type Outcome } from "./support/control_plane.ts";
import { startFakeImds } from "./support/imds.ts";
import { MOTO_URL, resetMoto } from "./support/moto.ts";
import {
  defaultUserData,
  fleetInstanceIds,
  harnessArgs,
  instanceTags,
  launchAsProvision,
  motoClients,
  refreshJson,
  REGION,
  startFakeRunnerRelease,
  TABLE,
} from "./support/pool.ts";
import { readGithubSide } from "./support/runner_package.ts";

const RUN_ID = "4242";

/** Runs refresh's entry in this process with `args`; returns its exit code and JSON report. */
async function refresh(args: string[]): Promise<{ code: number; report: RunReport }> {
  const { code, report, stderr } = await refreshJson(args);
  assert.equal(stderr, "", "refresh wrote to stderr");
  return { code, report };
}

/** The items of one partition of the pool's table. */
async function partition(ddb: DynamoDBDocumentClient, entity: string) {
  const { Items } = await ddb.send(
    new QueryCommand({
      TableName: TABLE,
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: { ":pk": `TYPE#${entity}` },
      ConsistentRead: true,
    }),
  );
  return Items ?? [];
}

function expectOk(outcome: Outcome, what: string, log: string): void {
  assert.ok(outcome.ok, `${what}: ${!outcome.ok && outcome.reason}\n--- bootstrap log ---\n${log}`);
}

Deno.test("a pool built by refresh runs a job: provision's instance registers for its run id, is released, then reaped", async () => {
  const network = await resetMoto();
  const dir = await Deno.makeTempDir({ prefix: "refresh-pool-" });
  const { ec2, ddb, destroy } = motoClients();
  let stopInstance = async () => {};
  try {
    // The runner package accepts only the registration token the fake GitHub hands out; that is
    // known once refresh asked for it.
    await using release = await startFakeRunnerRelease(dir);
    const { github: gh, runnerPackage, githubDir } = release;
    const setupFile = join(dir, "pre-runner.sh");
    await Deno.writeTextFile(
      setupFile,
      // Written where the harness reads it: the bootstrap's directory's parent, which the
      // setup script learns from REFRESH_RUNNER_DIR (<harness>/boot/actions-runner).
      '#!/bin/bash\nset -eu\necho "pool setup for $(id -un), HOME $HOME, user $REFRESH_JOB_USER" ' +
        '>"$(dirname "$(dirname "$REFRESH_RUNNER_DIR")")/pre-runner-ran"\n',
    );

    // 1. refresh builds the pool: every task, the generated bootstrap (no --user-data).
    const args = [...harnessArgs(network, release), "--pre-runner-script", setupFile];
    const built = await refresh(args);
    assert.equal(built.code, 0, JSON.stringify(built.report.results, null, 1));
    assert.deepEqual(
      built.report.results.filter((r) => r.status === "failed").map((r) => [r.task, r.error]),
      [],
    );
    const tokenRecord = (await partition(ddb, "METADATA"))
      .find((i) => i.SK === "ID#gh_registration_token");
    assert.equal(gh.issued.length, 1, "refresh asked GitHub for one registration token");
    assert.equal(tokenRecord?.value?.token, gh.issued[0], "the table holds GitHub's token");
    await release.acceptIssuedToken();

    // 2. provision's launch: CreateFleet, instant, refresh's template at $Default, overrides,
    // and its own instance tags.
    const fleet = await launchAsProvision(ec2, { runId: RUN_ID, subnetId: network.subnetIds[0] });
    assert.deepEqual(fleet.Errors ?? [], []);
    const instanceIds = fleetInstanceIds(fleet);
    assert.equal(instanceIds.length, 1);
    const [instanceId] = instanceIds;

    // 3. The user data of the template's default version, as cloud-init gets it.
    const { version, script } = await defaultUserData(ec2);
    const data = version.LaunchTemplateData!;
    // The second cause: the instance reads InitialRunId from instance metadata.
    assert.equal(data.MetadataOptions?.InstanceMetadataTags, "enabled");
    assert.equal(data.MetadataOptions?.HttpTokens, "required");
    assert.ok(script.startsWith("#!/bin/bash\n"), script.slice(0, 200));
    assert.ok(!script.includes(gh.issued[0]), "the registration token is in the user data");
    assert.ok(!script.includes(TEST_PAT), "the PAT is in the user data");

    const tags = await instanceTags(ec2, instanceId);
    assert.equal(tags.InitialRunId, RUN_ID);
    await using imds = startFakeImds({ instanceId, region: REGION, tags });
    const instance = await runUserData({
      dir,
      script,
      imdsUrl: imds.url,
      awsEndpoint: MOTO_URL,
    });
    stopInstance = instance.kill;

    // 4. provision: the record, then UD_REG_OK for the run id with a fresh heartbeat.
    const plane = new ControlPlane({ ddb, table: TABLE });
    const provisioned = await plane.provision(instanceId, RUN_ID, {
      timeoutMs: 90_000,
      instanceType: "t3.micro",
    });
    const bootToRegOkMs = Date.now() - instance.startedAt;
    expectOk(provisioned, "provision", await instance.log());
    const seen = plane.seen.get(instanceId)!.map((s) => `${s.state}/${s.runId}`);
    assert.deepEqual(seen.slice(-2), [`UD_OK/${RUN_ID}`, `UD_REG_OK/${RUN_ID}`], seen.join(", "));
    assert.match(
      await Deno.readTextFile(join(dir, "pre-runner-ran")),
      /^pool setup for root, HOME \/root, user refresh-test-runner\n$/,
    );
    assert.deepEqual(runnerPackage.requests, [
      `/v${DEFAULT_RUNNER_VERSION}/actions-runner-linux-x64-${DEFAULT_RUNNER_VERSION}.tar.gz`,
    ]);
    let github = await readGithubSide(githubDir);
    assert.deepEqual(github.runners, {
      // The run id, and the label naming the pool (contract.ts), which the reaper relies on.
      [`${instanceId}-1`]: {
        labels: `${RUN_ID},${poolRunnerLabel(REGION, TABLE)}`,
        url: `${gh.url}/acme/widgets`,
        group: "Default",
      },
    });
    assert.deepEqual(github.calls.map((c) => [c.verb, c.token]), [["config", "valid"]]);
    assert.ok(github.calls[0].args.includes("--no-default-labels"), github.calls[0].args.join(" "));

    // release: UD_REMOVE_REG_REMOVE_RUN_OK for the old run id, the registration gone.
    const released = await plane.release(instanceId, RUN_ID, { timeoutMs: 90_000 });
    expectOk(released, "release", await instance.log());
    github = await readGithubSide(githubDir);
    assert.deepEqual(github.runners, {});
    assert.deepEqual(github.calls.map((c) => [c.verb, c.token]), [
      ["config", "valid"],
      ["remove", "valid"],
    ]);
    assert.ok(github.events.includes(`stopped ${instanceId}-1`), github.events.join("\n"));
    console.log(
      `boot -> UD_REG_OK: ${(bootToRegOkMs / 1000).toFixed(1)} s; ` +
        `release -> UD_REMOVE_REG_REMOVE_RUN_OK: ${(released.elapsedMs / 1000).toFixed(1)} s`,
    );

    // 5. The instance goes silent and its record expires, as release leaves an instance that
    // never answers; refresh's reaper terminates it (proven the pool's by its template) and
    // removes its items.
    await instance.kill();
    await plane.expire(instanceId);
    const reaped = await refresh([...args, "--only", "reaper"]);
    assert.equal(reaped.code, 0, JSON.stringify(reaped.report.results, null, 1));
    const reaper = reaped.report.results[0];
    assert.deepEqual(
      reaper.changes.filter((c) => c.action === "terminate").map((c) => c.target),
      [`instance ${instanceId}`],
    );
    const after = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
    assert.equal(after.Reservations![0].Instances![0].State?.Name, "terminated");
    for (const entity of ["INSTANCE", "HEARTBEAT", "WS"]) {
      assert.deepEqual(
        (await partition(ddb, entity)).map((i) => i.SK),
        [],
        `${entity} items left`,
      );
    }
    assert.equal(reaped.report.calls["EC2.TerminateInstances"], 1);

    // Nothing left to do: another full run writes nothing.
    const again = await refresh(args);
    assert.equal(again.code, 0, JSON.stringify(again.report.results, null, 1));
    assert.deepEqual(
      again.report.results.map((r) => [r.task, r.status]),
      built.report.results.map((r) => [r.task, "unchanged"]),
    );
    assert.equal(again.report.writeCalls, 0, JSON.stringify(again.report.calls));
  } finally {
    await stopInstance();
    destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
