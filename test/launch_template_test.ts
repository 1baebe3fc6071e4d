import assert from "node:assert/strict";
import { readDocs } from "./support/docs.ts";
import { Buffer } from "node:buffer";
import {
  CreateLaunchTemplateCommand,
  CreateLaunchTemplateVersionCommand,
  CreateSecurityGroupCommand,
  DeleteLaunchTemplateCommand,
  DeleteLaunchTemplateVersionsCommand,
  DescribeLaunchTemplatesCommand,
  DescribeLaunchTemplateVersionsCommand,
  DescribeSecurityGroupsCommand,
  DescribeTagsCommand,
  EC2Client,
  ModifyLaunchTemplateCommand,
  type RequestLaunchTemplateData,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { CreateTableCommand, DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { PutCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { CallCounter } from "../lib/calls.ts";
import { ConfigError, type DesiredState, parseDesiredState } from "../lib/config.ts";
import { item, OWNER_TAG, poolRunnerLabel, sha256, timestamp } from "../lib/contract.ts";
import {
  describeFingerprint,
  differences,
  fingerprint,
  fingerprintOf,
  reconcileLaunchTemplate,
  templateData,
  versionDrift,
} from "../lib/launch_template.ts";
import { readMetadata } from "../lib/metadata.ts";
import type { RunReport } from "../lib/report.ts";
import { reconcileTable } from "../lib/table.ts";
import {
  type BootstrapInputs,
  DEFAULT_RUNNER_VERSION,
  encodeUserData,
  generatedScript,
  userDataContent,
} from "../lib/user_data.ts";
import { buildClients, main } from "../refresh.ts";
import {
  BASE_ARGS,
  baseArgs,
  contextOn,
  desiredFrom,
  TEST_PAT,
  type TestContext,
  testContext,
  withDesired,
} from "./support/aws.ts";
import { addXmlFields, startFaultProxy } from "./support/fault_proxy.ts";
import { type FakeRelease, startFakeGithub } from "./support/github.ts";
import { runRefresh } from "./support/process.ts";
import { AWS_ENV, MOTO_URL, type Network, resetMoto, startMoto } from "./support/moto.ts";
import { checkRefused, type InvalidInput } from "./support/refused.ts";

const NAME = "acme-widgets-ci-launch-template";
const TABLE = "acme-widgets-ci-table";
const TRUSTY = "ami-1e749f67";
const XENIAL = "ami-785db401";
const SCRIPT = "#!/bin/sh\necho start runner\n";
const FILES = { "/user-data.sh": SCRIPT };
const ARGS = ["--only", "launch-template", "--user-data", "/user-data.sh"];
/** Checksums of the runner packages, given so no test looks them up on github.com. */
const SHA_X64 = sha256("runner x64 package");
const SHA_ARM64 = sha256("runner arm64 package");
/** A pinned runner version and its checksums, as GitHub Enterprise Server or a mirror needs. */
const CHECKSUMS = [
  "--runner-version",
  DEFAULT_RUNNER_VERSION,
  "--runner-sha256-x64",
  SHA_X64,
  "--runner-sha256-arm64",
  SHA_ARM64,
];

/** Text that compresses badly (base64 of hash digests), the same every run. */
function incompressible(bytes: number): string {
  let out = "";
  for (let i = 0; out.length < bytes; i++) {
    out += Buffer.from(sha256(String(i)), "hex").toString("base64") + "\n";
  }
  return out.slice(0, bytes);
}

/** BASE_ARGS without its `--ami`, for name patterns. */
const BASE_WITHOUT_AMI = BASE_ARGS.filter((a, i) => a !== "--ami" && BASE_ARGS[i - 1] !== "--ami");

/** Desired state on the context's network with the test user data; `args` override the flags. */
function desired(ctx: TestContext, args: string[] = [], files: Record<string, string> = FILES) {
  return ctx.desiredFrom([...ARGS, ...args], undefined, files);
}

async function setup(args: string[] = [], files: Record<string, string> = FILES) {
  const ctx = await testContext([...ARGS, ...args], { files });
  await reconcileTable(ctx);
  ctx.counter.reset();
  return ctx;
}

async function versionsOf(ctx: TestContext) {
  const out = await ctx.clients.ec2.send(
    new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME }),
  );
  return out.LaunchTemplateVersions!;
}

async function defaultVersion(ctx: TestContext) {
  return (await versionsOf(ctx)).find((v) => v.DefaultVersion)!;
}

async function record(ctx: TestContext) {
  return await readMetadata(ctx.clients.ddb, TABLE, "launch_template") as Record<string, unknown>;
}

/** Calls by operation, leaving out reads of the actual state. */
function writes(ctx: TestContext): Record<string, number> {
  return Object.fromEntries(
    Object.entries(ctx.counter.toJSON()).filter(([op]) =>
      !/\.(Describe|Get)/.test(op) && !op.startsWith("GitHub")
    ),
  );
}

Deno.test("launch-template creates the template with IMDSv2, ownership tags and a record when missing", async () => {
  const ctx = await setup(["--tags", '{"team":"ci"}', "--instance-type", "m7i.large"]);
  const outcome = await reconcileLaunchTemplate(ctx);

  assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "write"]);
  assert.deepEqual(writes(ctx), { "DynamoDB.PutItem": 1, "EC2.CreateLaunchTemplate": 1 });
  const [template] = (await ctx.clients.ec2.send(
    new DescribeLaunchTemplatesCommand({ LaunchTemplateNames: [NAME] }),
  )).LaunchTemplates!;
  assert.deepEqual(template.Tags, [{ Key: OWNER_TAG, Value: TABLE }]);
  const version = await defaultVersion(ctx);
  assert.equal(version.VersionNumber, 1);
  const data = version.LaunchTemplateData!;
  assert.equal(data.ImageId, TRUSTY);
  assert.equal(data.InstanceType, "m7i.large");
  assert.deepEqual(data.IamInstanceProfile, { Name: "runner-profile" });
  assert.deepEqual(data.SecurityGroupIds, [ctx.network.securityGroupId]);
  assert.equal(Buffer.from(data.UserData!, "base64").toString("utf8"), SCRIPT);
  // Hop limit 1: containers on the instance cannot reach instance metadata (issue 19).
  assert.deepEqual(data.MetadataOptions, {
    HttpTokens: "required",
    HttpEndpoint: "enabled",
    HttpPutResponseHopLimit: 1,
    HttpProtocolIpv6: "disabled",
    InstanceMetadataTags: "enabled",
  });
  // A job that shuts the machine down terminates it.
  assert.equal(data.InstanceInitiatedShutdownBehavior, "terminate");
  assert.match(version.VersionDescription!, /^refresh desired-data sha256:[0-9a-f]{64}$/);
  // The image's root device, deleted with the instance, gp3 by default.
  assert.deepEqual(data.BlockDeviceMappings, [
    { DeviceName: "/dev/sda1", Ebs: { DeleteOnTermination: true, VolumeType: "gp3" } },
  ]);
  const tags = [{ Key: "team", Value: "ci" }, { Key: OWNER_TAG, Value: TABLE }];
  const specs = data.TagSpecifications!.filter((s) => s.ResourceType !== "launch-template");
  assert.deepEqual(specs, [
    { ResourceType: "instance", Tags: tags },
    { ResourceType: "volume", Tags: tags },
  ]);
  assert.deepEqual(await record(ctx), {
    name: NAME,
    ami: TRUSTY,
    iamInstanceProfile: "runner-profile",
    securityGroupIds: [ctx.network.securityGroupId],
    userDataHash: sha256(SCRIPT),
    userData: "",
    userDataBase64: "",
    id: template.LaunchTemplateId,
    version: 1,
  });
  assert.equal(outcome.found.template, null);
  assert.deepEqual(outcome.found.ami, {
    id: TRUSTY,
    name: "ubuntu/images/hvm-ssd/ubuntu-trusty-14.04-amd64-server-20170727",
    creationDate: (outcome.found.ami as { creationDate: string }).creationDate,
  });
});

Deno.test("launch-template keeps instance metadata from job containers (hop limit 1) unless jobs are meant to use it", () => {
  const hopLimit = (args: string[]) => {
    const d = desiredFrom(["--only", "launch-template", ...args], undefined, FILES);
    const data = templateData(
      d,
      { ImageId: TRUSTY, RootDeviceType: "ebs", RootDeviceName: "/dev/sda1" },
      { bytes: new Uint8Array(), compressed: false, plainBytes: 0 },
    );
    return data.MetadataOptions?.HttpPutResponseHopLimit;
  };
  assert.equal(hopLimit([]), 1, "the generated bootstrap, metadata blocked for jobs");
  assert.equal(hopLimit(["--job-metadata", "open"]), 2, "jobs use the instance role");
  assert.equal(hopLimit(["--user-data", "/user-data.sh"]), 1, "expert mode");
});

Deno.test("launch-template sees no drift in EC2's answer that adds the metadata options' state", () => {
  const d = desiredFrom(ARGS, undefined, FILES);
  const data = templateData(d, {
    ImageId: TRUSTY,
    RootDeviceType: "ebs",
    RootDeviceName: "/dev/sda1",
  }, { bytes: new TextEncoder().encode(SCRIPT), compressed: false, plainBytes: SCRIPT.length });
  // What EC2's DescribeLaunchTemplateVersions returns for that data: the same, plus the rollout
  // State of the metadata options and the security groups in another order.
  const answered = {
    ...data,
    SecurityGroupIds: [...data.SecurityGroupIds!].reverse(),
    MetadataOptions: { ...data.MetadataOptions, State: "applied" as const },
  };
  assert.deepEqual(differences(data, answered), []);
  const hopLimit = {
    ...answered,
    MetadataOptions: { ...answered.MetadataOptions, HttpPutResponseHopLimit: 2 },
  };
  assert.deepEqual(differences(data, hopLimit), ["MetadataOptions"]);
});

/** Defaults real EC2 shows in a version's data that refresh never asked for (moto shows none). */
const EC2_DEFAULTS = "<disableApiTermination>false</disableApiTermination>" +
  "<disableApiStop>false</disableApiStop>" +
  "<privateDnsNameOptions><hostnameType>ip-name</hostnameType>" +
  "<enableResourceNameDnsARecord>false</enableResourceNameDnsARecord></privateDnsNameOptions>";

Deno.test("launch-template makes no version when EC2's answer adds defaults to the data refresh wrote", async (t) => {
  await using proxy = startFaultProxy({ target: MOTO_URL });
  const network = await resetMoto();
  const ctx = contextOn(desiredFrom(ARGS, undefined, FILES, network), network, {
    clientEnv: { AWS_ENDPOINT_URL: proxy.url },
  });
  await reconcileTable(ctx);
  const extraDefaults = () =>
    proxy.rewrite(
      "EC2.DescribeLaunchTemplateVersions",
      addXmlFields("launchTemplateData", EC2_DEFAULTS),
      { times: Infinity },
    );

  await t.step("a version refresh made is judged by its fingerprint", async () => {
    await reconcileLaunchTemplate(ctx);
    extraDefaults();
    ctx.counter.reset();
    const outcome = await reconcileLaunchTemplate(ctx);
    assert.deepEqual(outcome.changes, []);
    assert.equal(ctx.counter.writes(), 0);
    // The proxy did add the defaults to what the task read.
    const [answered] = await versionsOf(ctx);
    assert.equal(answered.LaunchTemplateData?.DisableApiTermination, false);
    assert.ok(proxy.requests.some((r) => r.fault === "rewrite"));
  });

  await t.step("a changed desired state still makes a version, saying what changed", async () => {
    const changed = withDesired(ctx, desired(ctx, ["--ami", XENIAL]));
    ctx.counter.reset();
    const outcome = await reconcileLaunchTemplate(changed);
    assert.deepEqual(outcome.changes.map((c) => [c.action, c.detail]), [
      ["new-version", `2: ImageId ${TRUSTY} -> ${XENIAL}`],
      ["write", outcome.changes[1].detail],
    ]);
    ctx.counter.reset();
    assert.deepEqual((await reconcileLaunchTemplate(changed)).changes, []);
    assert.equal(ctx.counter.writes(), 0);
  });

  await t.step("a version made by hand is compared field by field", async () => {
    // The same data refresh wants, made by hand (no fingerprint) and made the default: EC2's
    // extra defaults are drift, as they must be for data refresh cannot vouch for.
    const d = desired(ctx, ["--ami", XENIAL]);
    const [current] = (await ctx.clients.ec2.send(
      new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME, Versions: ["2"] }),
    )).LaunchTemplateVersions!;
    const {
      DisableApiTermination: _t,
      DisableApiStop: _s,
      PrivateDnsNameOptions: _p,
      ...written
    } = current.LaunchTemplateData!;
    const made = await ctx.clients.ec2.send(
      new CreateLaunchTemplateVersionCommand({
        LaunchTemplateName: NAME,
        LaunchTemplateData: written as RequestLaunchTemplateData,
      }),
    );
    const byHand = made.LaunchTemplateVersion!.VersionNumber!;
    await ctx.clients.ec2.send(
      new ModifyLaunchTemplateCommand({ LaunchTemplateName: NAME, DefaultVersion: String(byHand) }),
    );
    const outcome = await reconcileLaunchTemplate(withDesired(ctx, d));
    // Version 2, refresh's own with the desired fingerprint, becomes the default again (the
    // record already names it).
    assert.deepEqual(outcome.changes.map((c) => [c.action, c.detail]), [
      [
        "set-default",
        "version 2, equal to the desired data (DisableApiStop; DisableApiTermination; PrivateDnsNameOptions)",
      ],
    ]);
  });
});

Deno.test("versionDrift trusts a fingerprint refresh recorded and compares other versions' data", () => {
  const d = desiredFrom(ARGS, undefined, FILES);
  const data = templateData(d, {
    ImageId: TRUSTY,
    RootDeviceType: "ebs",
    RootDeviceName: "/dev/sda1",
  }, { bytes: new TextEncoder().encode(SCRIPT), compressed: false, plainBytes: SCRIPT.length });
  const wanted = fingerprint(data);
  const extra = { ...data, DisableApiTermination: false };
  const mine = (hex: string, shown: RequestLaunchTemplateData) => ({
    VersionDescription: describeFingerprint(hex),
    LaunchTemplateData: shown,
  });
  assert.deepEqual(versionDrift(data, wanted, mine(wanted, extra)), []);
  assert.deepEqual(versionDrift(data, wanted, { LaunchTemplateData: extra }), [
    "DisableApiTermination",
  ]);
  // Another fingerprint: what differs among the desired fields, or the fingerprint itself.
  const other = "0".repeat(64);
  assert.deepEqual(versionDrift(data, wanted, mine(other, { ...extra, ImageId: XENIAL })), [
    `ImageId ${XENIAL} -> ${TRUSTY}`,
  ]);
  assert.deepEqual(versionDrift(data, wanted, mine(other, extra)), ["fingerprint 000000000000…"]);
  // Key order and security group order do not change the fingerprint; any value does.
  const reordered = Object.fromEntries(Object.entries(data).reverse());
  assert.equal(fingerprint(reordered), wanted);
  assert.notEqual(fingerprint({ ...data, InstanceType: "t3.micro" }), wanted);
  assert.equal(fingerprintOf(describeFingerprint(wanted)), wanted);
  assert.equal(fingerprintOf("made by hand"), undefined);
  assert.equal(fingerprintOf(undefined), undefined);
});

Deno.test("launch-template makes no write on a second run with the same desired state", async () => {
  const ctx = await setup(["--root-volume-size", "40", "--key-name", "ops"]);
  await reconcileLaunchTemplate(ctx);
  ctx.counter.reset();
  const outcome = await reconcileLaunchTemplate(ctx);
  assert.deepEqual(outcome.changes, []);
  assert.equal(ctx.counter.writes(), 0);
  assert.deepEqual(ctx.counter.toJSON(), {
    "DynamoDB.GetItem": 1,
    "EC2.DescribeImages": 1,
    "EC2.DescribeLaunchTemplateVersions": 1,
    "EC2.DescribeLaunchTemplates": 1,
    "EC2.DescribeSecurityGroups": 1,
  });
  assert.match(outcome.summary, /^acme-widgets-ci-launch-template version 1 matches/);
});

Deno.test("launch-template makes a new default version and updates the record when the AMI changes", async () => {
  const ctx = await setup();
  await reconcileLaunchTemplate(ctx);
  ctx.counter.reset();
  const next = withDesired(ctx, desired(ctx, ["--ami", XENIAL]));
  const outcome = await reconcileLaunchTemplate(next);

  assert.deepEqual(outcome.changes.slice(0, 1), [{
    action: "new-version",
    target: `launch template ${NAME}`,
    detail: `2: ImageId ${TRUSTY} -> ${XENIAL}`,
  }]);
  assert.deepEqual(writes(ctx), {
    "DynamoDB.PutItem": 1,
    "EC2.CreateLaunchTemplateVersion": 1,
    "EC2.ModifyLaunchTemplate": 1,
  });
  const current = await defaultVersion(ctx);
  assert.equal(current.VersionNumber, 2);
  assert.equal(current.LaunchTemplateData!.ImageId, XENIAL);
  // The new version carries the full data, not just what changed.
  assert.equal(Buffer.from(current.LaunchTemplateData!.UserData!, "base64").toString(), SCRIPT);
  assert.equal(current.LaunchTemplateData!.MetadataOptions!.HttpTokens, "required");
  const stored = await record(ctx);
  assert.equal(stored.ami, XENIAL);
  assert.equal(stored.version, 2);

  ctx.counter.reset();
  assert.deepEqual((await reconcileLaunchTemplate(next)).changes, []);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("launch-template makes a new version when only the user data changes, never printing it", async () => {
  const ctx = await setup();
  await reconcileLaunchTemplate(ctx);
  ctx.counter.reset();
  const secret = "export RUNNER_SECRET=s3cr3t-value-in-user-data\n";
  const next = withDesired(ctx, desired(ctx, [], { "/user-data.sh": SCRIPT + secret }));
  const outcome = await reconcileLaunchTemplate(next);

  assert.equal(outcome.changes[0].action, "new-version");
  assert.equal(outcome.changes[0].detail, "2: UserData content");
  assert.equal(ctx.counter.writes(), 3);
  const current = await defaultVersion(ctx);
  assert.equal(current.VersionNumber, 2);
  assert.equal(
    Buffer.from(current.LaunchTemplateData!.UserData!, "base64").toString(),
    SCRIPT + secret,
  );
  assert.equal((await record(ctx)).userDataHash, sha256(SCRIPT + secret));
  assert.ok(!JSON.stringify(outcome).includes("s3cr3t"), "user data never leaves EC2");
  assert.ok(!ctx.lines.join("\n").includes("s3cr3t"));
});

Deno.test("launch-template recreates the template when it was deleted out of band", async () => {
  const ctx = await setup();
  await reconcileLaunchTemplate(ctx);
  const before = await record(ctx);
  await ctx.clients.ec2.send(new DeleteLaunchTemplateCommand({ LaunchTemplateName: NAME }));
  ctx.counter.reset();
  const outcome = await reconcileLaunchTemplate(ctx);

  assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "write"]);
  assert.deepEqual(writes(ctx), { "DynamoDB.PutItem": 1, "EC2.CreateLaunchTemplate": 1 });
  const after = await record(ctx);
  assert.notEqual(after.id, before.id);
  assert.equal(after.id, (await defaultVersion(ctx)).LaunchTemplateId);
  assert.equal(after.version, 1);
});

Deno.test("launch-template repairs a default version changed out of band by restoring the equal one", async () => {
  const ctx = await setup();
  await reconcileLaunchTemplate(ctx);
  const original = (await defaultVersion(ctx)).LaunchTemplateData!;
  const edited = {
    ...original,
    KeyName: "someone-elses-key",
    MetadataOptions: { ...original.MetadataOptions, HttpTokens: "optional" },
    TagSpecifications: original.TagSpecifications!.filter((s) => s.ResourceType === "volume"),
  } as RequestLaunchTemplateData;
  await ctx.clients.ec2.send(
    new CreateLaunchTemplateVersionCommand({
      LaunchTemplateName: NAME,
      LaunchTemplateData: edited,
    }),
  );
  await ctx.clients.ec2.send(
    new ModifyLaunchTemplateCommand({ LaunchTemplateName: NAME, DefaultVersion: "2" }),
  );
  ctx.counter.reset();
  const outcome = await reconcileLaunchTemplate(ctx);

  // Version 1 still holds the desired data: it becomes the default again, no version is added.
  assert.deepEqual(outcome.changes[0], {
    action: "set-default",
    target: `launch template ${NAME}`,
    detail:
      "version 1, equal to the desired data (KeyName someone-elses-key -> (none); MetadataOptions; TagSpecifications)",
  });
  // The record already named version 1: only EC2 is repaired.
  assert.deepEqual(writes(ctx), { "EC2.ModifyLaunchTemplate": 1 });
  assert.equal((await defaultVersion(ctx)).VersionNumber, 1);
  assert.equal((await record(ctx)).version, 1);
});

Deno.test("launch-template adds a version when no existing one matches the drifted template", async () => {
  const ctx = await setup();
  await reconcileLaunchTemplate(ctx);
  const original = (await defaultVersion(ctx)).LaunchTemplateData!;
  // Someone made a version with another instance type the default; the desire changed too.
  await ctx.clients.ec2.send(
    new CreateLaunchTemplateVersionCommand({
      LaunchTemplateName: NAME,
      LaunchTemplateData: { ...original, InstanceType: "t3.nano" } as RequestLaunchTemplateData,
    }),
  );
  await ctx.clients.ec2.send(
    new ModifyLaunchTemplateCommand({ LaunchTemplateName: NAME, DefaultVersion: "2" }),
  );
  ctx.counter.reset();
  const next = withDesired(ctx, desired(ctx, ["--instance-type", "m7i.large"]));
  const outcome = await reconcileLaunchTemplate(next);

  assert.equal(outcome.changes[0].detail, "3: InstanceType t3.nano -> m7i.large");
  assert.deepEqual(writes(ctx), {
    "DynamoDB.PutItem": 1,
    "EC2.CreateLaunchTemplateVersion": 1,
    "EC2.ModifyLaunchTemplate": 1,
  });
  const current = await defaultVersion(ctx);
  assert.equal(current.VersionNumber, 3);
  assert.equal(current.LaunchTemplateData!.InstanceType, "m7i.large");
  assert.equal(current.LaunchTemplateData!.MetadataOptions!.HttpTokens, "required");
});

Deno.test("launch-template makes an earlier equal version the default again when the AMI is reverted", async () => {
  const ctx = await setup();
  await reconcileLaunchTemplate(ctx);
  await reconcileLaunchTemplate(withDesired(ctx, desired(ctx, ["--ami", XENIAL])));
  ctx.counter.reset();
  const outcome = await reconcileLaunchTemplate(ctx);
  assert.equal(outcome.changes[0].action, "set-default");
  assert.match(outcome.changes[0].detail!, /^version 1, .*ImageId ami-785db401 -> ami-1e749f67/);
  assert.equal(ctx.counter.total((op) => op === "EC2.CreateLaunchTemplateVersion"), 0);
  assert.equal((await defaultVersion(ctx)).VersionNumber, 1);
  assert.equal((await versionsOf(ctx)).length, 2);
  assert.deepEqual([(await record(ctx)).ami, (await record(ctx)).version], [TRUSTY, 1]);
});

Deno.test("launch-template prunes to the newest N versions and never deletes the default", async (t) => {
  const ctx = await setup(["--keep-versions", "100"]);
  const script = (n: number) => ({ "/user-data.sh": `${SCRIPT}# build ${n}\n` });
  for (let n = 1; n <= 5; n++) {
    await reconcileLaunchTemplate(
      withDesired(ctx, desired(ctx, ["--keep-versions", "100"], script(n))),
    );
  }
  assert.equal((await defaultVersion(ctx)).VersionNumber, 5);

  await t.step("keeps the newest 2 after a new version", async () => {
    ctx.counter.reset();
    const outcome = await reconcileLaunchTemplate(
      withDesired(ctx, desired(ctx, ["--keep-versions", "2"], script(6))),
    );
    assert.deepEqual(outcome.changes.map((c) => c.action), ["new-version", "prune", "write"]);
    assert.equal(outcome.changes[1].detail, "versions 1, 2, 3, 4");
    assert.deepEqual((await versionsOf(ctx)).map((v) => v.VersionNumber), [5, 6]);
    assert.deepEqual(outcome.warnings, []);
    assert.equal(ctx.counter.total((op) => op === "EC2.DeleteLaunchTemplateVersions"), 1);
  });

  await t.step("keeps an old default version beyond the newest N", async () => {
    await reconcileLaunchTemplate(
      withDesired(ctx, desired(ctx, ["--keep-versions", "100"], script(7))),
    );
    await reconcileLaunchTemplate(
      withDesired(ctx, desired(ctx, ["--keep-versions", "100"], script(8))),
    );
    // An operator rolls back by hand to version 5; the desired state follows.
    await ctx.clients.ec2.send(
      new ModifyLaunchTemplateCommand({ LaunchTemplateName: NAME, DefaultVersion: "5" }),
    );
    ctx.counter.reset();
    const outcome = await reconcileLaunchTemplate(
      withDesired(ctx, desired(ctx, ["--keep-versions", "1"], script(5))),
    );
    assert.deepEqual(outcome.changes.map((c) => c.action), ["prune", "write"]);
    assert.equal(outcome.changes[0].detail, "versions 6, 7");
    assert.deepEqual(outcome.warnings, []);
    assert.deepEqual((await versionsOf(ctx)).map((v) => v.VersionNumber), [5, 8]);
    assert.equal((await defaultVersion(ctx)).VersionNumber, 5);
  });

  await t.step("then makes no write", async () => {
    ctx.counter.reset();
    const outcome = await reconcileLaunchTemplate(
      withDesired(ctx, desired(ctx, ["--keep-versions", "1"], script(5))),
    );
    assert.deepEqual(outcome.changes, []);
    assert.equal(ctx.counter.writes(), 0);
  });
});

Deno.test("launch-template warns about a version EC2 refuses to delete and still succeeds", async () => {
  const ctx = await setup(["--keep-versions", "1"]);
  await reconcileLaunchTemplate(ctx);
  // A concurrent run deletes version 1 after this one listed it, just before this one does.
  const { endpoint, credentials } = ctx.clients.ec2.config;
  const other = new EC2Client({ region: "us-east-1", endpoint, credentials });
  ctx.clients.ec2.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === "DeleteLaunchTemplateVersionsCommand") {
        await other.send(
          new DeleteLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME, Versions: ["1"] }),
        );
      }
      return await next(args);
    },
    { step: "initialize", name: "deleteVersionConcurrently" },
  );
  const outcome = await reconcileLaunchTemplate(
    withDesired(ctx, desired(ctx, ["--keep-versions", "1", "--ami", XENIAL])),
  );
  assert.deepEqual(outcome.changes.map((c) => c.action), ["new-version", "prune", "write"]);
  const { id, version } = await record(ctx);
  assert.deepEqual(outcome.warnings, [
    `could not delete version 1 of ${NAME}: launchTemplateVersionDoesNotExist Version 1 of launch template ${id} does not exist.`,
  ]);
  assert.deepEqual((await versionsOf(ctx)).map((v) => v.VersionNumber), [2]);
  assert.equal(version, 2);
});

Deno.test("launch-template plans create, new version and prune under dry-run and writes nothing", async (t) => {
  await t.step("create on an empty account", async () => {
    const ctx = await testContext([...ARGS, "--dry-run"], { files: FILES });
    const outcome = await reconcileLaunchTemplate(ctx);
    assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "write"]);
    assert.match(outcome.changes[1].detail!, /^\(new\) version 1, ami-1e749f67, /);
    assert.equal(ctx.counter.writes(), 0);
    const left = await ctx.clients.ec2.send(new DescribeLaunchTemplatesCommand({}));
    assert.deepEqual(left.LaunchTemplates, []);
  });

  await t.step("new version and prune match what a real run then does", async () => {
    const ctx = await setup(["--keep-versions", "1"]);
    await reconcileLaunchTemplate(ctx);
    const change = ["--keep-versions", "1", "--ami", XENIAL];
    ctx.counter.reset();
    const planned = await reconcileLaunchTemplate(
      withDesired(ctx, desired(ctx, [...change, "--dry-run"])),
    );
    assert.equal(ctx.counter.writes(), 0);
    assert.equal((await defaultVersion(ctx)).LaunchTemplateData!.ImageId, TRUSTY);
    const applied = await reconcileLaunchTemplate(withDesired(ctx, desired(ctx, change)));
    assert.deepEqual(planned.changes, applied.changes);
    assert.deepEqual(planned.changes.map((c) => c.action), ["new-version", "prune", "write"]);
    assert.deepEqual((await versionsOf(ctx)).map((v) => v.VersionNumber), [2]);
  });
});

Deno.test("launch-template rewrites the record when it disagrees with EC2, and only the record", async () => {
  const ctx = await setup();
  await reconcileLaunchTemplate(ctx);
  const good = await record(ctx);
  await ctx.clients.ddb.send(
    new PutCommand({
      TableName: TABLE,
      Item: {
        PK: "TYPE#METADATA",
        SK: "ID#launch_template",
        value: { ...good, version: 7, ami: XENIAL },
      },
    }),
  );
  ctx.counter.reset();
  const outcome = await reconcileLaunchTemplate(ctx);
  assert.deepEqual(outcome.changes.map((c) => c.target), ["metadata launch_template"]);
  const id = (good as { id: string }).id;
  assert.equal(
    outcome.changes[0].detail,
    `${id} version 7, ${XENIAL}, user data ${sha256(SCRIPT).slice(0, 12)}… -> ` +
      `${id} version 1, ${TRUSTY}, user data ${sha256(SCRIPT).slice(0, 12)}…`,
  );
  assert.deepEqual(writes(ctx), { "DynamoDB.PutItem": 1 });
  assert.deepEqual(await record(ctx), good);
});

Deno.test("launch-template refuses a template of the same name that another pool owns", async () => {
  const ctx = await setup();
  await ctx.clients.ec2.send(
    new CreateLaunchTemplateCommand({
      LaunchTemplateName: NAME,
      LaunchTemplateData: { ImageId: TRUSTY },
      TagSpecifications: [{
        ResourceType: "launch-template",
        Tags: [{ Key: OWNER_TAG, Value: "other-ci-table" }],
      }],
    }),
  );
  ctx.counter.reset();
  await assert.rejects(
    () => reconcileLaunchTemplate(ctx),
    new RegExp(
      `^Error: launch template ${NAME} \\(lt-[0-9a-f]+\\) belongs to the pool of table "other-ci-table" \\(tag refresh:pool\\), not "${TABLE}"`,
    ),
  );
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("launch-template adopts an untagged template of its name: tags it and versions it", async () => {
  const ctx = await setup();
  await ctx.clients.ec2.send(
    new CreateLaunchTemplateCommand({
      LaunchTemplateName: NAME,
      LaunchTemplateData: { ImageId: TRUSTY, InstanceType: "t3.micro" },
    }),
  );
  ctx.counter.reset();
  const outcome = await reconcileLaunchTemplate(ctx);
  assert.deepEqual(outcome.changes.map((c) => c.action), ["tag", "new-version", "write"]);
  assert.match(outcome.warnings![0], /^adopted acme-widgets-ci-launch-template \(lt-/);
  const [template] = (await ctx.clients.ec2.send(
    new DescribeLaunchTemplatesCommand({ LaunchTemplateNames: [NAME] }),
  )).LaunchTemplates!;
  assert.equal(template.DefaultVersionNumber, 2);
  // Both the template and the tag store show the tag added after creation, as EC2 does (moto
  // needs test/support/moto_server.py's patch for the first).
  assert.deepEqual(template.Tags, [{ Key: OWNER_TAG, Value: TABLE }]);
  const { Tags } = await ctx.clients.ec2.send(
    new DescribeTagsCommand({
      Filters: [{ Name: "resource-id", Values: [template.LaunchTemplateId!] }],
    }),
  );
  assert.deepEqual(Tags!.map((t) => [t.Key, t.Value]), [[OWNER_TAG, TABLE]]);

  // So the next run finds its own template and writes nothing.
  ctx.counter.reset();
  assert.deepEqual((await reconcileLaunchTemplate(ctx)).changes, []);
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("launch-template sets the root volume on the image's root device", async (t) => {
  await t.step("with size and type", async () => {
    const ctx = await setup(["--root-volume-size", "40", "--root-volume-type", "gp2"]);
    await reconcileLaunchTemplate(ctx);
    assert.deepEqual((await defaultVersion(ctx)).LaunchTemplateData!.BlockDeviceMappings, [
      {
        DeviceName: "/dev/sda1",
        Ebs: { DeleteOnTermination: true, VolumeSize: 40, VolumeType: "gp2" },
      },
    ]);
  });
  const failures: [string, string[], RegExp][] = [
    [
      "smaller than the image's snapshot",
      ["--root-volume-size", "8"],
      /^Error: root-volume-size: 8 GiB is smaller than the 15 GiB root snapshot of ami-1e749f67$/,
    ],
    [
      "on a device that is not the image's root",
      ["--root-device-name", "/dev/xvda"],
      /^Error: root-device-name: \/dev\/xvda is not the root device of ami-1e749f67 \(\/dev\/sda1\); omit it to use the image's$/,
    ],
  ];
  for (const [name, args, message] of failures) {
    await t.step(`fails with no write ${name}`, async () => {
      const ctx = await setup(args);
      await assert.rejects(() => reconcileLaunchTemplate(ctx), message);
      assert.equal(ctx.counter.writes(), 0);
    });
  }
});

Deno.test("launch-template fails with no write when the AMI id does not exist", async () => {
  const ctx = await setup(["--ami", "ami-0123456789abcdef0"]);
  await assert.rejects(
    () => reconcileLaunchTemplate(ctx),
    /^Error: ami: ami-0123456789abcdef0 does not exist in us-east-1 or is not shared with this account$/,
  );
  assert.deepEqual(ctx.counter.toJSON(), { "EC2.DescribeImages": 1 });
});

Deno.test("launch-template fails with no write when a security group does not exist", async () => {
  const ctx = await testContext((network) => [
    ...ARGS,
    "--security-group-ids",
    `${network.securityGroupId},sg-0000000000000dead`,
  ], { files: FILES });
  await reconcileTable(ctx);
  ctx.counter.reset();
  await assert.rejects(
    () => reconcileLaunchTemplate(ctx),
    new Error(
      "security-group-ids: sg-0000000000000dead does not exist in us-east-1; expected existing " +
        "ids in the runners' VPC",
    ),
  );
  assert.equal(ctx.counter.writes(), 0);
  const { LaunchTemplates } = await ctx.clients.ec2.send(new DescribeLaunchTemplatesCommand({}));
  assert.deepEqual(LaunchTemplates, []);
});

Deno.test("launch-template fails with no write when the security groups lie in two VPCs", async () => {
  const ctx = await setup();
  const { GroupId } = await ctx.clients.ec2.send(
    new CreateSecurityGroupCommand({ GroupName: "elsewhere", Description: "default VPC" }),
  );
  const { SecurityGroups } = await ctx.clients.ec2.send(
    new DescribeSecurityGroupsCommand({ GroupIds: [GroupId!] }),
  );
  ctx.counter.reset();
  const twoVpcs = desired(ctx, [
    "--security-group-ids",
    `${ctx.network.securityGroupId},${GroupId}`,
  ]);
  await assert.rejects(
    () => reconcileLaunchTemplate(withDesired(ctx, twoVpcs)),
    new Error(
      `security-group-ids: spread over 2 VPCs, ${ctx.network.vpcId} (${ctx.network.securityGroupId}) and ` +
        `${SecurityGroups![0].VpcId} (${GroupId}); runners launch from one template into one VPC`,
    ),
  );
  assert.equal(ctx.counter.writes(), 0);
});

/** Images with distinct creation dates, which moto cannot make by API (it stamps "now"). */
const IMAGES = [
  ["ami-0a0000000000000a1", "runner-2024-01", "123456789012", "available", "2024-01-10T08:00:00Z"],
  ["ami-0a0000000000000a2", "runner-2024-03", "123456789012", "available", "2024-03-10T08:00:00Z"],
  ["ami-0a0000000000000a3", "runner-zz-old", "123456789012", "available", "2023-06-01T08:00:00Z"],
  ["ami-0a0000000000000a4", "runner-2024-06", "123456789012", "pending", "2024-06-10T08:00:00Z"],
  ["ami-0a0000000000000a5", "runner-2024-09", "210987654321", "available", "2024-09-10T08:00:00Z"],
  ["ami-0a0000000000000a6", "builder-2025-01", "123456789012", "available", "2025-01-10T08:00:00Z"],
].map(([ami_id, name, owner_id, state, creation_date]) => ({
  ami_id,
  name,
  owner_id,
  state,
  creation_date,
  public: true,
  root_device_type: "ebs",
  root_device_name: "/dev/xvda",
  architecture: "x86_64",
  virtualization_type: "hvm",
}));

/** A second moto, private to this test, serving only {@link IMAGES} (MOTO_AMIS_PATH). */
async function startImageMoto(): Promise<{ url: string; network: Network } & AsyncDisposable> {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/amis.json`, JSON.stringify(IMAGES));
  const moto = await startMoto({ MOTO_AMIS_PATH: `${dir}/amis.json` });
  const network = await moto.makeNetwork();
  return {
    url: moto.url,
    network,
    async [Symbol.asyncDispose]() {
      await moto.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("launch-template resolves a name pattern to the newest available image of the owners", async (t) => {
  await using moto = await startImageMoto();
  const context = async (args: string[]) => {
    const parsed = parseDesiredState({
      args: [
        ...BASE_WITHOUT_AMI,
        "--only",
        "launch-template",
        "--security-group-ids",
        moto.network.securityGroupId,
        ...CHECKSUMS,
        ...args,
      ],
      env: {},
      readTextFile: () => "",
    });
    assert.ok(parsed !== "help");
    const ctx = contextOn(parsed, moto.network, { clientEnv: { AWS_ENDPOINT_URL: moto.url } });
    await reconcileTable(ctx);
    ctx.counter.reset();
    return ctx;
  };

  await t.step("by creation date, not name; skipping pending images and other owners", async () => {
    const ctx = await context(["--ami-name", "runner-*"]);
    const outcome = await reconcileLaunchTemplate(ctx);
    assert.deepEqual(outcome.found.ami, {
      id: "ami-0a0000000000000a2",
      name: "runner-2024-03",
      creationDate: "2024-03-10T08:00:00.000Z",
      namePattern: "runner-*",
      matches: 3,
    });
    assert.equal((await record(ctx)).ami, "ami-0a0000000000000a2");
    const data = (await defaultVersion(ctx)).LaunchTemplateData!;
    assert.equal(data.ImageId, "ami-0a0000000000000a2");
    assert.equal(data.BlockDeviceMappings![0].DeviceName, "/dev/xvda");
  });

  await t.step("among the images of the owners given", async () => {
    const ctx = await context(["--ami-name", "runner-*", "--ami-owners", "210987654321,self"]);
    const outcome = await reconcileLaunchTemplate(ctx);
    assert.equal((outcome.found.ami as { id: string }).id, "ami-0a0000000000000a5");
  });

  await t.step("fails with no write when nothing matches", async () => {
    const ctx = await context(["--ami-name", "runner-2030-*"]);
    await assert.rejects(
      () => reconcileLaunchTemplate(ctx),
      /^Error: ami-name: no available image in us-east-1 named like "runner-2030-\*" owned by self$/,
    );
    assert.equal(ctx.counter.writes(), 0);
  });
});

/** Parses flags on top of a base and returns the ConfigError's problems (none: []). */
function problems(
  args: string[],
  files: Record<string, string> = {},
  base = BASE_ARGS,
): string[] {
  try {
    parseDesiredState({
      args: [...base, "--only", "launch-template", ...args],
      env: {},
      readTextFile: (path) => {
        if (path in files) return files[path];
        throw new Deno.errors.NotFound(`no such file: ${path}`);
      },
    });
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems;
  }
}

const manyTags = JSON.stringify(Object.fromEntries(
  Array.from({ length: 48 }, (_, i) => [`tag${i}`, "x"]),
));

const BAD_INPUTS: [string, string[], string, string[]?][] = [
  [
    "AMI id of 9 hex digits",
    ["--ami", "ami-123456789"],
    'ami: "ami-123456789" is not an AMI id (ami- and 8 or 17 hex digits)',
  ],
  ["security group id of 5 hex digits", [
    "--security-group-ids",
    "sg-12345",
  ], 'security-group-ids: "sg-12345" is not a security group id (sg-…)'],
  [
    "AMI name pattern with a forbidden character",
    ["--ami-name", "runner$*"],
    `ami-name: "runner$*" is not an AMI name pattern (1-128 of letters, digits, space, ( ) [ ] . / - ' @ _ and the wildcards * ?)`,
    BASE_WITHOUT_AMI,
  ],
  [
    "AMI owner that is no account or alias",
    ["--ami-name", "runner-*", "--ami-owners", "canonical"],
    'ami-owners: "canonical" is not an account id (12 digits), self, amazon, aws-marketplace or aws-backup-vault',
    BASE_WITHOUT_AMI,
  ],
  [
    "AMI owners without a name pattern",
    ["--ami-owners", "self"],
    "ami-owners: only used with --ami-name; remove it or set --ami-name",
  ],
  [
    "tags overriding the ownership tag",
    ["--tags", '{"refresh:pool":"mine"}'],
    `tags: key "refresh:pool" is refresh's ownership tag (the table name); remove it`,
  ],
  [
    "48 extra tags",
    ["--tags", manyTags],
    "tags: 48 tags given; at most 47 (EC2's 50 per instance, less the ownership tag and provision's AllowSelfTermination and InitialRunId)",
  ],
  [
    "a tag provision sets",
    ["--tags", '{"InitialRunId":"1"}'],
    'tags: key "InitialRunId" is set by provision on every instance it launches; remove it',
  ],
  [
    "a tag key instance metadata cannot show",
    ["--tags", '{"team/name":"ci"}'],
    'tags: key "team/name" cannot be read from instance metadata, where EC2 allows only letters, digits and + - = . , _ : @ (no spaces or /, not only . or .., not _index); rename it, or set --instance-metadata-tags disabled with your own --user-data',
  ],
  [
    "_index as a tag key",
    ["--tags", '{"_index":"ci"}'],
    'tags: key "_index" cannot be read from instance metadata, where EC2 allows only letters, digits and + - = . , _ : @ (no spaces or /, not only . or .., not _index); rename it, or set --instance-metadata-tags disabled with your own --user-data',
  ],
  [
    "io2 root volume",
    ["--root-volume-type", "io2"],
    'root-volume-type: "io2" is not one of gp3, gp2, standard (io1 and io2 need provisioned IOPS, st1 and sc1 cannot boot)',
  ],
  [
    "standard root volume over 1 TiB",
    ["--root-volume-type", "standard", "--root-volume-size", "2000"],
    "root-volume-size: 2000 GiB exceeds 1024, the most a standard volume holds",
  ],
  ["root volume over 16 TiB", [
    "--root-volume-size",
    "20000",
  ], 'root-volume-size: expected a whole number 1-16384, got "20000"'],
  [
    "root device without /dev/",
    ["--root-device-name", "xvda"],
    'root-device-name: "xvda" is not a device name like /dev/xvda',
  ],
  [
    "key name with non-ASCII characters",
    ["--key-name", "clé"],
    'key-name: "clé" is not a key pair name (1-255 ASCII characters)',
  ],
  ["no versions kept", [
    "--keep-versions",
    "0",
  ], 'keep-versions: expected a whole number 1-100, got "0"'],
  [
    "instance profile ARN of another kind",
    ["--iam-instance-profile", "arn:aws:iam::123456789012:role/runner"],
    'iam-instance-profile: "arn:aws:iam::123456789012:role/runner" is not an instance profile ARN',
  ],
];

Deno.test("launch-template inputs are rejected before any call", async (t) => {
  for (const [name, args, message, base] of BAD_INPUTS) {
    await t.step(name, () => {
      assert.deepEqual(problems(args, {}, base), [message]);
    });
  }
  await t.step("user data over EC2's 16 KB even gzip-compressed", () => {
    const found = problems(["--user-data", "/big.sh"], { "/big.sh": incompressible(30_000) });
    assert.equal(found.length, 1);
    assert.match(
      found[0],
      /^user-data: \/big\.sh is 30000 bytes, (\d+) gzip-compressed; EC2 allows at most 16384 bytes of user data \(before base64\), so shorten it$/,
    );
  });
  await t.step("every problem at once from the entry, exit 2, no call", async () => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(
      [
        ...BASE_ARGS,
        "--only",
        "launch-template",
        "--ami",
        "ami-zz",
        "--tags",
        '{"refresh:pool":""}',
      ],
      { ...AWS_ENV, AWS_ENDPOINT_URL: "http://127.0.0.1:9" },
      { stdout: (s) => out.push(s), stderr: (s) => err.push(s), readTextFile: () => "" },
    );
    assert.equal(code, 2);
    assert.deepEqual(out, []);
    assert.match(err.join("\n"), /ami: "ami-zz" is not an AMI id/);
    assert.match(err.join("\n"), /tags: key "refresh:pool" is refresh's ownership tag/);
  });
});

// Each invalid input of the task: the problem names the field, the offending value and what is
// expected.
const INVALID: InvalidInput[] = [
  [
    "malformed security group",
    [...BASE_ARGS, "--security-group-ids", "sg-1"],
    undefined,
    /security-group-ids: "sg-1" is not a security group id/,
  ],
  [
    "malformed AMI id",
    [...BASE_ARGS, "--ami", "ami-zz"],
    undefined,
    /ami: "ami-zz" is not an AMI id/,
  ],
  [
    "both AMI id and name pattern",
    [...BASE_ARGS, "--ami-name", "ubuntu/*"],
    undefined,
    /ami: set either --ami or --ami-name, not both/,
  ],
  [
    "user data too large",
    [...BASE_ARGS, "--user-data", "big.sh"],
    undefined,
    /user-data: big.sh is 45500 bytes, \d+ gzip-compressed; EC2 allows at most 16384 bytes/,
  ],
  [
    "user data file missing",
    [...BASE_ARGS, "--user-data", "missing.sh"],
    undefined,
    /user-data: cannot read missing.sh: No such file or directory: missing.sh/,
  ],
  [
    "non-string tag value",
    [...BASE_ARGS, "--tags", '{"team": 7}'],
    undefined,
    /tags: value of "team" must be a string, got 7/,
  ],
  [
    "keep-versions zero",
    [...BASE_ARGS, "--keep-versions", "0"],
    undefined,
    /keep-versions: expected a whole number 1-100, got "0"/,
  ],
  [
    "runner version neither latest nor x.y.z",
    [...BASE_ARGS, "--runner-version", "newest"],
    undefined,
    /runner-version: "newest" is neither latest nor a runner version like 2\.334\.0/,
  ],
  [
    "runner checksums with runner version latest",
    [...BASE_ARGS, ...CHECKSUMS.slice(2)],
    undefined,
    /runner-version: checksums are given, but the version is latest/,
  ],
];

Deno.test("launch-template refuses invalid inputs with a message and sends no request", (t) =>
  checkRefused(t, INVALID, {
    // Hex digests, one a line: over 16 KB even gzip-compressed.
    "big.sh": Array.from({ length: 700 }, (_, i) => sha256(String(i))).join("\n") + "\n",
  }));

// The generated bootstrap (the default user data) and the rules that come with it.

/** The actions/runner release the fake GitHub serves, with both checksums. */
const RELEASE: FakeRelease = {
  repository: "actions/runner",
  tag_name: `v${DEFAULT_RUNNER_VERSION}`,
  body: [
    `- actions-runner-linux-x64-${DEFAULT_RUNNER_VERSION}.tar.gz <!-- BEGIN SHA linux-x64 -->${SHA_X64}<!-- END SHA linux-x64 -->`,
    `- actions-runner-linux-arm64-${DEFAULT_RUNNER_VERSION}.tar.gz <!-- BEGIN SHA linux-arm64 -->${SHA_ARM64}<!-- END SHA linux-arm64 -->`,
  ].join("\n"),
  assets: [{
    name: `actions-runner-linux-x64-${DEFAULT_RUNNER_VERSION}.tar.gz`,
    digest: `sha256:${SHA_X64}`,
  }],
};

/** A setup script of about 1.3 KB, like a typical pre-runner script. */
const SETUP = [
  "#!/bin/bash",
  "# Tools every job of this pool needs.",
  "set -euo pipefail",
  ...Array.from(
    { length: 24 },
    (_, i) => `dnf install -y tool-${i} && echo "tool ${i} installed" >> /var/log/setup.log`,
  ),
].join("\n") + "\n";

/** Flags of a desired state with the generated bootstrap (no --user-data). */
function generated(args: string[] = []) {
  return ["--only", "launch-template", ...args];
}

/**
 * A context with the generated bootstrap, its table made; `files` are readable. Without a fake
 * GitHub (`--github-api-url`) there is no GitHub credential, so nothing is asked of github.com.
 */
async function setupGenerated(args: string[] = [], files: Record<string, string> = {}) {
  const env: Record<string, string> = args.includes("--github-api-url")
    ? { GITHUB_TOKEN: TEST_PAT }
    : {};
  const ctx = await testContext(generated(args), { files, env });
  await reconcileTable(ctx);
  ctx.counter.reset();
  return ctx;
}

/** The generated inputs of a desired state. */
function bootstrapOf(d: DesiredState): BootstrapInputs {
  const source = d.launchTemplate.userData;
  assert.equal(source.kind, "bootstrap");
  return (source as { inputs: BootstrapInputs }).inputs;
}

/** What the report says of a script's size: its bytes as sent, and as written when compressed. */
function sizesOf(script: string) {
  const encoded = encodeUserData(script);
  assert.ok(!("tooLarge" in encoded));
  return {
    bytes: encoded.bytes.length,
    ...(encoded.compressed ? { compressed: "gzip", scriptBytes: encoded.plainBytes } : {}),
  };
}

/** The content (decoded, uncompressed) of a template version's user data. */
function contentOf(version: { LaunchTemplateData?: { UserData?: string } }): string {
  return userDataContent(version.LaunchTemplateData!.UserData!);
}

Deno.test("launch-template generates the bootstrap by default, with checksums from the runner's release and metadata tags enabled", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT], releases: [RELEASE] });
  const args = ["--github-api-url", gh.url, "--pre-runner-script", "/setup.sh"];
  const files = { "/setup.sh": SETUP };
  const ctx = await setupGenerated(args, files);
  const d = ctx.desired;
  const outcome = await reconcileLaunchTemplate(ctx);

  assert.deepEqual(outcome.changes.map((c) => c.action), ["create", "write"]);
  const inputs = bootstrapOf(d);
  assert.deepEqual(inputs, {
    table: TABLE,
    region: "us-east-1",
    poolLabel: poolRunnerLabel("us-east-1", TABLE),
    githubUrl: `${gh.url}/acme/widgets`,
    runner: { version: "latest" },
    preRunnerScript: SETUP,
  });
  const script = generatedScript(
    inputs,
    { x64: SHA_X64, arm64: SHA_ARM64 },
    DEFAULT_RUNNER_VERSION,
  );
  const version = await defaultVersion(ctx);
  assert.equal(contentOf(version), script);
  assert.equal(version.LaunchTemplateData!.MetadataOptions!.InstanceMetadataTags, "enabled");
  assert.equal((await record(ctx)).userDataHash, sha256(script));
  assert.deepEqual(outcome.found.userData, {
    source: "generated bootstrap",
    githubUrl: `${gh.url}/acme/widgets`,
    runner: {
      version: DEFAULT_RUNNER_VERSION,
      requested: "latest",
      sha256: { x64: SHA_X64, arm64: SHA_ARM64 },
      checksumsFrom: { x64: "asset digest", arm64: "release notes" },
      newestRelease: { version: DEFAULT_RUNNER_VERSION },
    },
    preRunnerScript: true,
    // The bootstrap and a 1.3 KB setup script pass 16 KB: EC2 gets them gzip-compressed.
    ...sizesOf(script),
  });
  // One read: the newest release gives the version and its checksums.
  assert.deepEqual(gh.requests.map((r) => `${r.method} ${r.path}`), [
    "GET /repos/actions/runner/releases/latest",
  ]);

  // Unchanged desired state, second run: the same script, no write.
  ctx.counter.reset();
  const again = await reconcileLaunchTemplate(
    withDesired(ctx, ctx.desiredFrom(generated(args), undefined, files)),
  );
  assert.deepEqual(again.changes, []);
  assert.equal(ctx.counter.writes(), 0);
  assert.equal((await versionsOf(ctx)).length, 1);
});

Deno.test("launch-template puts the runner inputs into the bootstrap and makes a version when they change", async () => {
  await using gh = startFakeGithub({ tokens: [TEST_PAT], releases: [RELEASE] });
  const pinned = [...CHECKSUMS, "--github-api-url", gh.url];
  const base = generated(pinned);
  const ctx = await setupGenerated(pinned);
  const first = ctx.desired;
  await reconcileLaunchTemplate(ctx);
  assert.equal(contentOf(await defaultVersion(ctx)), generatedScript(bootstrapOf(first)));

  const mirror = "https://mirror.example.com/runner/{version}/actions-runner-linux-{arch}.tar.gz";
  const next = ctx.desiredFrom([
    ...base,
    "--org",
    "acme",
    "--runner-group",
    "ci pool",
    "--runner-version",
    "2.333.0",
    "--runner-download-url",
    mirror,
  ]);
  assert.deepEqual(bootstrapOf(next), {
    table: TABLE,
    region: "us-east-1",
    poolLabel: poolRunnerLabel("us-east-1", TABLE),
    githubUrl: `${gh.url}/acme`,
    runnerGroup: "ci pool",
    runner: {
      version: "2.333.0",
      sha256: { x64: SHA_X64, arm64: SHA_ARM64 },
      downloadUrl: mirror,
    },
  });
  ctx.counter.reset();
  const outcome = await reconcileLaunchTemplate(withDesired(ctx, next));
  assert.equal(outcome.changes[0].detail, "2: UserData content");
  assert.equal(contentOf(await defaultVersion(ctx)), generatedScript(bootstrapOf(next)));
  // Given checksums: the only GitHub read is the newest release, to check the pin is accepted.
  assert.deepEqual(gh.requests.map((r) => `${r.method} ${r.path}`), [
    "GET /repos/actions/runner/releases/latest",
    "GET /repos/actions/runner/releases/latest",
  ]);
  assert.deepEqual(outcome.warnings, []);
});

Deno.test("launch-template with --user-data runs the operator's script, with metadata tags as asked", async () => {
  const ctx = await setup(["--instance-metadata-tags", "disabled", "--tags", '{"team/name":"ci"}']);
  const outcome = await reconcileLaunchTemplate(ctx);
  const version = await defaultVersion(ctx);
  assert.equal(contentOf(version), SCRIPT);
  assert.equal(version.LaunchTemplateData!.MetadataOptions!.InstanceMetadataTags, "disabled");
  assert.deepEqual(outcome.found.userData, {
    source: "--user-data /user-data.sh",
    bytes: SCRIPT.length,
  });
  assert.equal(ctx.counter.total((op) => op.startsWith("GitHub")), 0);

  // Turning them on is drift: a new version, the same script.
  ctx.counter.reset();
  const next = await reconcileLaunchTemplate(withDesired(ctx, desired(ctx)));
  assert.equal(next.changes[0].detail, "2: MetadataOptions; TagSpecifications");
  assert.equal(
    (await defaultVersion(ctx)).LaunchTemplateData!.MetadataOptions!.InstanceMetadataTags,
    "enabled",
  );
});

Deno.test("launch-template takes a fleet-actions-sized script plus a 1.3 KB setup script, unlike a check of the base64 form", async (t) => {
  // fleet-actions' own bootstrap is about 12 KB: with a setup script its base64 form passes
  // 16 KB while the script itself, what EC2 limits, does not.
  const fleetSized = `#!/bin/bash\n${incompressible(12_500)}\n${SETUP}`;
  await t.step("as --user-data, sent as it is", async () => {
    const ctx = await setup([], { "/user-data.sh": fleetSized });
    await reconcileLaunchTemplate(ctx);
    const data = (await defaultVersion(ctx)).LaunchTemplateData!;
    assert.ok(data.UserData!.length > 16384, `base64 form is ${data.UserData!.length}`);
    assert.equal(Buffer.from(data.UserData!, "base64").toString("utf8"), fleetSized);
  });
  await t.step("as the generated bootstrap with --pre-runner-script", async () => {
    const ctx = await setupGenerated([...CHECKSUMS, "--pre-runner-script", "/setup.sh"], {
      "/setup.sh": SETUP,
    });
    await reconcileLaunchTemplate(ctx);
    assert.equal(contentOf(await defaultVersion(ctx)), generatedScript(bootstrapOf(ctx.desired)));
  });
});

Deno.test("launch-template gzips user data over 16 KB: EC2 gets the compressed form, which decompresses to the script", async () => {
  // A long but ordinary setup script: repetitive shell compresses well.
  const longSetup = `#!/bin/bash\n${SETUP.repeat(15)}`;
  const files = { "/setup.sh": longSetup };
  const args = [...CHECKSUMS, "--pre-runner-script", "/setup.sh"];
  const ctx = await setupGenerated(args, files);
  const d = ctx.desired;
  const outcome = await reconcileLaunchTemplate(ctx);

  const script = generatedScript(bootstrapOf(d));
  const bytes = Buffer.from((await defaultVersion(ctx)).LaunchTemplateData!.UserData!, "base64");
  assert.ok(new TextEncoder().encode(script).length > 16384);
  assert.ok(bytes.length <= 16384, `${bytes.length} bytes`);
  assert.deepEqual([...bytes.subarray(0, 2)], [0x1f, 0x8b]);
  // The real gzip, as cloud-init's would, gives the script back.
  const gunzip = new Deno.Command("gzip", { args: ["-dc"], stdin: "piped", stdout: "piped" })
    .spawn();
  const writer = gunzip.stdin.getWriter();
  await writer.write(bytes);
  await writer.close();
  assert.equal(new TextDecoder().decode((await gunzip.output()).stdout), script);
  const found = outcome.found.userData as Record<string, unknown>;
  assert.equal(found.compressed, "gzip");
  assert.equal(found.bytes, bytes.length);
  assert.equal((await record(ctx)).userDataHash, sha256(script));

  ctx.counter.reset();
  const again = await reconcileLaunchTemplate(
    withDesired(ctx, ctx.desiredFrom(generated(args), undefined, files)),
  );
  assert.deepEqual(again.changes, []);
  assert.equal(ctx.counter.writes(), 0);
});

/** A release of `version` published `daysAgo` days before now, its checksums in its digests. */
function releaseOf(version: string, daysAgo: number, sha = SHA_X64): FakeRelease {
  return {
    repository: "actions/runner",
    tag_name: `v${version}`,
    published_at: new Date(Date.now() - daysAgo * 86_400_000).toISOString().replace(
      /\.\d+Z$/,
      "Z",
    ),
    assets: (["x64", "arm64"] as const).map((arch) => ({
      name: `actions-runner-linux-${arch}-${version}.tar.gz`,
      digest: `sha256:${arch === "x64" ? sha : SHA_ARM64}`,
    })),
  };
}

Deno.test("launch-template makes a new version when actions/runner publishes a new release, then none", async () => {
  const releases = [releaseOf("2.334.0", 40)];
  await using gh = startFakeGithub({ tokens: [TEST_PAT], releases });
  const args = ["--github-api-url", gh.url];
  const ctx = await setupGenerated(args);
  await reconcileLaunchTemplate(ctx);
  const installs = async (version: string, not: string) => {
    const script = contentOf(await defaultVersion(ctx));
    assert.ok(script.includes(version) && !script.includes(not), `the script installs ${version}`);
  };
  await installs("2.334.0", "2.335.0");

  releases.push(releaseOf("2.335.0", 0, sha256("runner x64 package 2.335.0")));
  ctx.counter.reset();
  const outcome = await reconcileLaunchTemplate(ctx);
  assert.deepEqual(outcome.changes.map((c) => [c.action, c.target]), [
    ["new-version", `launch template ${NAME}`],
    ["write", "metadata launch_template"],
  ]);
  assert.equal(outcome.changes[0].detail, "2: UserData content");
  await installs("2.335.0", "2.334.0");
  assert.deepEqual(outcome.warnings, []);

  ctx.counter.reset();
  assert.deepEqual((await reconcileLaunchTemplate(ctx)).changes, []);
  assert.equal(ctx.counter.writes(), 0);
  // One GitHub read per run.
  assert.equal(ctx.counter.total((op) => op.startsWith("GitHub")), 1);
});

Deno.test("refresh warns in its report, annotations and job summary when a pinned runner is one GitHub refuses", async () => {
  await using gh = startFakeGithub({
    tokens: [TEST_PAT],
    releases: [releaseOf("2.334.0", 90), releaseOf("2.335.0", 45)],
  });
  const network = await resetMoto();
  const dir = await Deno.makeTempDir();
  try {
    const summaryPath = `${dir}/summary.md`;
    const stdout: string[] = [];
    const stderr: string[] = [];
    const code = await main(
      [
        ...baseArgs(network),
        "--only",
        "table,launch-template",
        "--github-api-url",
        gh.url,
        ...CHECKSUMS,
      ],
      {
        ...AWS_ENV,
        GITHUB_TOKEN: TEST_PAT,
        GITHUB_ACTIONS: "true",
        GITHUB_STEP_SUMMARY: summaryPath,
      },
      {
        stdout: (t) => stdout.push(t),
        stderr: (t) => stderr.push(t),
        readTextFile: (path) => Deno.readTextFileSync(path),
      },
    );
    assert.equal(code, 0, stdout.join("\n"));
    const warning =
      /runner 2\.334\.0 is older than actions\/runner 2\.335\.0, published \d{4}-\d\d-\d\d \(45 days ago\): GitHub stops sending jobs to runners with updates disabled 30 days after a newer release/;
    assert.match(stdout.join("\n"), new RegExp(`^  warning: ${warning.source}`, "m"));
    assert.ok(
      stderr.some((l) =>
        l.startsWith("::warning title=refresh launch-template::") && warning.test(l)
      ),
      stderr.join("\n"),
    );
    assert.match(
      await Deno.readTextFile(summaryPath),
      new RegExp(`launch-template: ⚠️ ${warning.source}`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("launch-template fails with no write when the runner's release gives no checksum", async () => {
  await using gh = startFakeGithub({
    tokens: [TEST_PAT],
    releases: [{ ...RELEASE, body: RELEASE.body!.split("\n")[0] }],
  });
  const ctx = await setupGenerated(["--github-api-url", gh.url]);
  await assert.rejects(
    () => reconcileLaunchTemplate(ctx),
    new Error(
      `the newest actions/runner release v${DEFAULT_RUNNER_VERSION} does not give the checksums ` +
        `refresh needs: actions-runner-linux-arm64-${DEFAULT_RUNNER_VERSION}.tar.gz: no SHA-256 ` +
        "published (no asset digest, no <!-- BEGIN SHA linux-arm64 --> marker in the release " +
        "notes); set --runner-version to an earlier version, or give it with " +
        "--runner-sha256-x64 and --runner-sha256-arm64",
    ),
  );
  assert.equal(ctx.counter.writes(), 0);
});

Deno.test("launch-template bootstrap inputs are rejected before any call", async (t) => {
  const ghes = ["--github-api-url", "https://ghe.example.com/api/v3"];
  const cases: [string, string[], string[]][] = [
    [
      "--pre-runner-script with --user-data",
      ["--user-data", "/user-data.sh", "--pre-runner-script", "/setup.sh"],
      [
        "pre-runner-script: only used by the generated bootstrap, and --user-data replaces it; remove one of them",
      ],
    ],
    [
      "runner inputs with --user-data",
      ["--user-data", "/user-data.sh", "--runner-version", "2.333.0"],
      [
        "runner-version: only used by the generated bootstrap, and --user-data replaces it; remove --runner-version",
      ],
    ],
    [
      "GitHub Enterprise Server without checksums",
      ghes,
      [
        "runner-sha256-x64: required with GitHub Enterprise Server (https://ghe.example.com/api/v3), whose API does not hold github.com's actions/runner releases; give --runner-version, --runner-sha256-x64 and --runner-sha256-arm64 (from https://github.com/actions/runner/releases), and --runner-download-url if the instances cannot reach github.com",
      ],
    ],
    [
      "one checksum of two",
      ["--runner-version", "2.334.0", "--runner-sha256-x64", SHA_X64],
      [
        "runner-sha256-arm64: required with --runner-sha256-x64; give the checksums of both packages, or neither to look them up in the runner's release",
      ],
    ],
    [
      "a checksum that is no SHA-256",
      [
        "--runner-version",
        "2.334.0",
        "--runner-sha256-x64",
        "abc",
        "--runner-sha256-arm64",
        SHA_ARM64,
      ],
      ['runner-sha256-x64: "abc" is not a SHA-256 checksum (64 hex digits)'],
    ],
    [
      "checksums without a version (latest changes with each release)",
      ["--runner-sha256-x64", SHA_X64, "--runner-sha256-arm64", SHA_ARM64],
      [
        "runner-version: checksums are given, but the version is latest (the default), which changes with each actions/runner release; set --runner-version to the version the checksums are of, or remove --runner-sha256-x64 and --runner-sha256-arm64",
      ],
    ],
    [
      "a runner version that is no version",
      ["--runner-version", "v2.334"],
      ['runner-version: "v2.334" is neither latest nor a runner version like 2.334.0'],
    ],
    [
      "a download URL without {arch}",
      ["--runner-download-url", "https://mirror.example.com/runner-{version}.tar.gz"],
      [
        'runner-download-url: "https://mirror.example.com/runner-{version}.tar.gz" has no {arch}; the x64 and arm64 packages are different files',
      ],
    ],
    [
      "a download URL with shell syntax",
      ["--runner-download-url", "https://mirror.example.com/$(id)/{arch}.tar.gz"],
      [
        'runner-download-url: "https://mirror.example.com/$(id)/{arch}.tar.gz" has a space, quote or shell character; percent-encode it',
      ],
    ],
    [
      "a runner group for repository runners",
      ["--runner-group", "ci"],
      [
        "runner-group: runner groups hold organization-level runners only; set --org too, or remove it",
      ],
    ],
    [
      "metadata tags disabled with the generated bootstrap",
      ["--instance-metadata-tags", "disabled"],
      [
        "instance-metadata-tags: the generated bootstrap reads its first run id from the instance tag InitialRunId in instance metadata; remove --instance-metadata-tags disabled, or give your own --user-data",
      ],
    ],
    [
      "a pre-runner script that cannot be read",
      ["--pre-runner-script", "/missing.sh"],
      ["pre-runner-script: cannot read /missing.sh: no such file: /missing.sh"],
    ],
  ];
  const files = { "/user-data.sh": SCRIPT, "/setup.sh": SETUP };
  for (const [name, args, expected] of cases) {
    await t.step(name, () => assert.deepEqual(problems(args, files), expected));
  }
  await t.step("GitHub Enterprise Server with checksums and a mirror", () => {
    const mirror = ["--runner-download-url", "https://ghe.example.com/runner/{arch}.tar.gz"];
    assert.deepEqual(problems([...ghes, ...CHECKSUMS, ...mirror], files), []);
  });
  await t.step("no repository or organization to register with", () => {
    const base = BASE_ARGS.filter((a, i) => a !== "--repo" && BASE_ARGS[i - 1] !== "--repo");
    assert.deepEqual(problems(["--table", TABLE, ...CHECKSUMS], files, base), [
      "repo: required by task launch-template; set --repo or GITHUB_REPOSITORY or --org or REFRESH_ORG or --user-data or REFRESH_USER_DATA",
    ]);
  });
  await t.step(
    "a bootstrap too large even gzip-compressed: exit 2 with both sizes, no call",
    async () => {
      const err: string[] = [];
      const code = await main(
        [...BASE_ARGS, "--only", "launch-template", "--pre-runner-script", "/setup.sh"],
        { ...AWS_ENV, AWS_ENDPOINT_URL: "http://127.0.0.1:9", GITHUB_TOKEN: TEST_PAT },
        {
          stdout: () => {},
          stderr: (s) => err.push(s),
          readTextFile: () => incompressible(40_000),
        },
      );
      assert.equal(code, 2);
      assert.match(
        err.join("\n"),
        /pre-runner-script: the generated bootstrap with the pre-runner script is \d{5} bytes, \d{5} gzip-compressed; EC2 allows at most 16384 bytes of user data \(before base64\), so shorten it/,
      );
    },
  );
});

Deno.test("refresh takes over a table and launch template made by fleet-actions with no manual step", async () => {
  const network = await resetMoto();
  await using gh = startFakeGithub({ tokens: [TEST_PAT], releases: [RELEASE] });
  const aws = buildClients(desiredFrom([], undefined, {}, network), AWS_ENV, new CallCounter());
  // fleet-actions' refresh made the table (PK/SK, on demand) and its records...
  await new DynamoDBClient({ region: "us-east-1", endpoint: MOTO_URL }).send(
    new CreateTableCommand({
      TableName: TABLE,
      KeySchema: [{ AttributeName: "PK", KeyType: "HASH" }, {
        AttributeName: "SK",
        KeyType: "RANGE",
      }],
      AttributeDefinitions: [{ AttributeName: "PK", AttributeType: "S" }, {
        AttributeName: "SK",
        AttributeType: "S",
      }],
      BillingMode: "PAY_PER_REQUEST",
    }),
  );
  const fleetScript = "#!/bin/bash\necho 'fleet-actions bootstrap'\n";
  const now = new Date();
  const records: Record<string, unknown> = {
    idle_time_sec: 420,
    max_runtime_min: 30,
    subnet_ids: [network.subnetIds[0]],
    launch_template: {
      name: NAME,
      ami: TRUSTY,
      iamInstanceProfile: "runner-profile",
      securityGroupIds: [network.securityGroupId],
      userDataHash: sha256(fleetScript),
      userData: "",
      userDataBase64: "",
    },
    gh_registration_token: {
      token: "AREGFleetActionsToken",
      timestamp: timestamp(now),
      expires_at: timestamp(new Date(now.getTime() + 50 * 60_000)),
    },
  };
  for (const [id, value] of Object.entries(records)) {
    await aws.ddb.send(
      new PutCommand({ TableName: TABLE, Item: item("METADATA", id, now, { value }) }),
    );
  }
  // ...and the launch template, untagged, as its LaunchTemplateOperations builds it.
  await aws.ec2.send(
    new CreateLaunchTemplateCommand({
      LaunchTemplateName: NAME,
      LaunchTemplateData: {
        ImageId: TRUSTY,
        IamInstanceProfile: { Name: "runner-profile" },
        SecurityGroupIds: [network.securityGroupId],
        UserData: Buffer.from(fleetScript).toString("base64"),
        MetadataOptions: {
          HttpTokens: "required",
          HttpPutResponseHopLimit: 10,
          HttpEndpoint: "enabled",
          HttpProtocolIpv6: "disabled",
          InstanceMetadataTags: "enabled",
        },
      },
    }),
  );

  // The inputs fleet-actions' refresh took, mapped as the README says (its idle time was 420 s).
  const args = [
    ...baseArgs(network),
    "--idle-time-sec",
    "420",
    "--github-api-url",
    gh.url,
    "--json",
  ];
  const env = { ...AWS_ENV, GITHUB_TOKEN: TEST_PAT };
  const run = async () => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(args, env, {
      stdout: (s) => out.push(s),
      stderr: (s) => err.push(s),
      readTextFile: () => "",
    });
    assert.equal(code, 0, err.join("\n"));
    return JSON.parse(out.join("\n")) as RunReport;
  };

  const first = await run();
  const byTask = Object.fromEntries(first.results.map((r) => [r.task, r]));
  assert.deepEqual(byTask["launch-template"].changes.map((c) => c.action), [
    "tag",
    "new-version",
    "write",
  ]);
  assert.match(byTask["launch-template"].warnings[0], /^adopted acme-widgets-ci-launch-template/);
  // The table, its parameters and the token were kept: the same values, nothing rewritten.
  assert.deepEqual(byTask.table.changes.map((c) => c.action), ["enable-ttl"]);
  assert.deepEqual(byTask.parameters.changes, []);
  assert.deepEqual(byTask["github-token"].changes, []);
  assert.deepEqual(gh.issued, []);
  const current = (await aws.ec2.send(
    new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME, Versions: ["$Default"] }),
  )).LaunchTemplateVersions![0];
  assert.equal(current.VersionNumber, 2);
  assert.equal(current.LaunchTemplateData!.MetadataOptions!.InstanceMetadataTags, "enabled");
  assert.match(contentOf(current), /^#!\/bin\/bash/);
  assert.notEqual(contentOf(current), fleetScript);
  // fleet-actions' provision reads the same record, with refresh's additions beside its fields.
  const stored = await readMetadata(aws.ddb, TABLE, "launch_template") as Record<string, unknown>;
  assert.deepEqual(Object.keys(stored).sort(), [
    "ami",
    "iamInstanceProfile",
    "id",
    "name",
    "securityGroupIds",
    "userData",
    "userDataBase64",
    "userDataHash",
    "version",
  ]);
  assert.equal(stored.name, NAME);
  assert.equal(stored.version, 2);

  const second = await run();
  assert.equal(second.writeCalls, 0, JSON.stringify(second.calls));
});

Deno.test("launch-template reads at most 1 MiB of a pre-runner script: an endless file exits 2 at once", async () => {
  const started = performance.now();
  const result = await runRefresh([...BASE_ARGS, "--pre-runner-script", "/dev/zero"]);
  assert.equal(result.code, 2, result.stderr);
  assert.match(
    result.stderr,
    /pre-runner-script: cannot read \/dev\/zero: larger than 1048576 bytes, the most refresh reads of it/,
  );
  assert.ok(performance.now() - started < 15_000);
});

Deno.test("the documentation's example configs parse and use the generated bootstrap, not --user-data", () => {
  const readme = readDocs();
  const configs = [...readme.matchAll(/```json\n([\s\S]*?)```/g)]
    .map((m) => JSON.parse(m[1]) as Record<string, unknown>)
    .filter((c) => "ami" in c || "ami-name" in c);
  assert.ok(configs.length >= 1, "the README has an example pool config");
  for (const config of configs) {
    assert.equal(config["user-data"], undefined, JSON.stringify(config));
    const files: Record<string, string> = { "/example.json": JSON.stringify(config) };
    if (typeof config["pre-runner-script"] === "string") {
      files[config["pre-runner-script"]] = "#!/bin/bash\ndnf install -y git\n";
    }
    // As the workflow runs it: the repository and region from the job's environment.
    const d = parseDesiredState({
      args: ["--config", "/example.json"],
      env: { GITHUB_REPOSITORY: "acme/widgets", AWS_REGION: "eu-west-1", GITHUB_TOKEN: TEST_PAT },
      readTextFile: (path) => {
        if (path in files) return files[path];
        throw new Deno.errors.NotFound(`no such file: ${path}`);
      },
    });
    assert.ok(d !== "help");
    assert.equal(d.launchTemplate.userData.kind, "bootstrap");
    assert.equal(bootstrapOf(d).runner.version, "latest");
  }
});
