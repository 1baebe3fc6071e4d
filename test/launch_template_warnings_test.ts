/**
 * EC2 accepts some invalid launch template parameters with a warning (`Warning.Errors` of
 * CreateLaunchTemplate and CreateLaunchTemplateVersion, API reference: ValidationWarning, an
 * `errorSet` of `code`/`message` items) instead of an error. moto never sends one, so the fault
 * proxy adds it to moto's answer: the template or version is made, and the task must not take it.
 */
import assert from "node:assert/strict";
import {
  DescribeLaunchTemplatesCommand,
  DescribeLaunchTemplateVersionsCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { readMetadata } from "../lib/metadata.ts";
import { reconcileLaunchTemplate } from "../lib/launch_template.ts";
import { reconcileTable } from "../lib/table.ts";
import { contextOn, desiredFrom, type TestContext, withDesired } from "./support/aws.ts";
import { type FaultProxy, type ProxyAnswer, startFaultProxy } from "./support/fault_proxy.ts";
import { MOTO_URL, resetMoto } from "./support/moto.ts";

const NAME = "acme-widgets-ci-launch-template";
const TABLE = "acme-widgets-ci-table";
const FILES = { "/user-data.sh": "#!/bin/sh\necho start runner\n" };
const ARGS = ["--only", "launch-template", "--user-data", "/user-data.sh"];
const XENIAL = "ami-785db401";

/** moto's answer with EC2's warning element added, as EC2 sends it (query protocol XML). */
const withWarning = (answer: ProxyAnswer): ProxyAnswer => ({
  ...answer,
  body: answer.body.replace(
    /<\/(CreateLaunchTemplate(?:Version)?Response)>\s*$/,
    "<warning><errorSet>" +
      "<item><code>InvalidKeyPair.NotFound</code><message>The key pair 'gone' does not exist</message></item>" +
      "<item><code>InvalidParameterValue</code><message>Invalid value for HttpPutResponseHopLimit</message></item>" +
      "</errorSet></warning></$1>",
  ),
});

const SAID = "InvalidKeyPair.NotFound: The key pair 'gone' does not exist; " +
  "InvalidParameterValue: Invalid value for HttpPutResponseHopLimit";

async function setup(proxy: FaultProxy): Promise<TestContext> {
  const network = await resetMoto();
  const ctx = contextOn(desiredFrom(ARGS, undefined, FILES, network), network, {
    clientEnv: { AWS_ENDPOINT_URL: proxy.url },
  });
  await reconcileTable(ctx);
  ctx.counter.reset();
  return ctx;
}

const templates = async (ctx: TestContext) =>
  (await ctx.clients.ec2.send(new DescribeLaunchTemplatesCommand({}))).LaunchTemplates ?? [];

Deno.test("launch-template fails, deletes the template and records nothing when EC2 creates it with warnings", async () => {
  await using proxy = startFaultProxy({ target: MOTO_URL });
  const ctx = await setup(proxy);
  proxy.rewrite("EC2.CreateLaunchTemplate", withWarning);
  await assert.rejects(reconcileLaunchTemplate(ctx), (error: Error) => {
    assert.match(
      error.message,
      new RegExp(
        `^EC2 made launch template ${NAME} \\(lt-[0-9a-f]+\\) with warnings about invalid parameters \\(${
          SAID.replace(/[().]/g, "\\$&")
        }\\); refresh deleted it again and did not record it: fix the launch template inputs$`,
      ),
    );
    return true;
  });
  assert.deepEqual(await templates(ctx), [], "the warned template is gone");
  assert.equal(await readMetadata(ctx.clients.ddb, TABLE, "launch_template"), undefined);

  // Without the warning, the next run makes it and records it.
  const outcome = await reconcileLaunchTemplate(ctx);
  assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "write"]);
  assert.equal((await templates(ctx)).length, 1);
});

Deno.test("launch-template fails, deletes the new version and keeps the default when EC2 makes it with warnings", async () => {
  await using proxy = startFaultProxy({ target: MOTO_URL });
  const ctx = await setup(proxy);
  await reconcileLaunchTemplate(ctx);
  const before = await readMetadata(ctx.clients.ddb, TABLE, "launch_template");

  const changed = withDesired(ctx, ctx.desiredFrom([...ARGS, "--ami", XENIAL], undefined, FILES));
  proxy.rewrite("EC2.CreateLaunchTemplateVersion", withWarning);
  await assert.rejects(
    reconcileLaunchTemplate(changed),
    new RegExp(`^Error: EC2 made version 2 of launch template ${NAME} with warnings`),
  );
  const versions = (await ctx.clients.ec2.send(
    new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME }),
  )).LaunchTemplateVersions!;
  assert.deepEqual(versions.map((v) => [v.VersionNumber, v.DefaultVersion]), [[1, true]]);
  assert.deepEqual(await readMetadata(ctx.clients.ddb, TABLE, "launch_template"), before);
  assert.equal(ctx.counter.counts.get("EC2.ModifyLaunchTemplate"), undefined);

  const outcome = await reconcileLaunchTemplate(changed);
  assert.ok(outcome.changes.some((c) => c.action === "new-version"));
  const [template] = await templates(ctx);
  const latest = (await ctx.clients.ec2.send(
    new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME, Versions: ["$Default"] }),
  )).LaunchTemplateVersions![0];
  assert.equal(latest.LaunchTemplateData?.ImageId, XENIAL);
  assert.equal(template.DefaultVersionNumber, latest.VersionNumber);
});
