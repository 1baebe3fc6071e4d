import assert from "node:assert/strict";
import {
  CreateFleetCommand,
  CreateLaunchTemplateCommand,
  CreateLaunchTemplateVersionCommand,
  DeleteLaunchTemplateVersionsCommand,
  DescribeInstancesCommand,
  DescribeLaunchTemplatesCommand,
  DescribeLaunchTemplateVersionsCommand,
  type DescribeLaunchTemplateVersionsRequest,
  DescribeSecurityGroupsCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
  EC2Client,
  ModifyLaunchTemplateCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { CreateQueueCommand, ListQueuesCommand, SQSClient } from "npm:@aws-sdk/client-sqs@3.1169.0";
import { AWS_ENV, MOTO_URL, type Network, resetMoto } from "./support/moto.ts";

const NAME = "moto-extension-template";

const ec2 = new EC2Client({
  endpoint: MOTO_URL,
  region: AWS_ENV.AWS_REGION,
  credentials: {
    accessKeyId: AWS_ENV.AWS_ACCESS_KEY_ID,
    secretAccessKey: AWS_ENV.AWS_SECRET_ACCESS_KEY,
  },
});

/** What EC2 says of a network's pieces: VPC, and each subnet's and the group's VPC and zone. */
async function describeNetwork(network: Network) {
  const vpcs = await ec2.send(new DescribeVpcsCommand({ VpcIds: [network.vpcId] }));
  const subnets = await ec2.send(
    new DescribeSubnetsCommand({ SubnetIds: [...network.subnetIds] }),
  );
  const groups = await ec2.send(
    new DescribeSecurityGroupsCommand({ GroupIds: [network.securityGroupId] }),
  );
  return {
    vpcs: vpcs.Vpcs!.map((v) => v.VpcId),
    subnets: subnets.Subnets!.map((s) => [s.SubnetId, s.VpcId, s.AvailabilityZone])
      .sort((a, b) => a[2]!.localeCompare(b[2]!)),
    groups: groups.SecurityGroups!.map((g) => [g.GroupId, g.VpcId, g.GroupName]),
  };
}

Deno.test("moto harness reset makes a network whose ids EC2 finds, subnets and group in its VPC", async () => {
  // The reset runs after instances were launched and terminated, as it does between tests.
  const before = await resetMoto();
  const { Instances } = await ec2.send(
    new RunInstancesCommand({
      ImageId: "ami-1e749f67",
      SubnetId: before.subnetIds[0],
      MinCount: 1,
      MaxCount: 1,
    }),
  );
  await ec2.send(new TerminateInstancesCommand({ InstanceIds: [Instances![0].InstanceId!] }));

  const network = await resetMoto();
  assert.equal(network.subnetIds.length, 2);
  assert.deepEqual(await describeNetwork(network), {
    vpcs: [network.vpcId],
    subnets: [
      [network.subnetIds[0], network.vpcId, "us-east-1a"],
      [network.subnetIds[1], network.vpcId, "us-east-1b"],
    ],
    groups: [[network.securityGroupId, network.vpcId, "runners"]],
  });
  // Only this network's VPC exists besides the default one: the reset emptied the account.
  const { Vpcs } = await ec2.send(new DescribeVpcsCommand({}));
  assert.deepEqual(Vpcs!.filter((v) => !v.IsDefault).map((v) => v.VpcId), [network.vpcId]);
});

Deno.test("moto harness pages ListQueues like SQS: a NextToken only with MaxResults", async () => {
  await resetMoto();
  const sqs = new SQSClient({
    endpoint: MOTO_URL,
    region: AWS_ENV.AWS_REGION,
    credentials: {
      accessKeyId: AWS_ENV.AWS_ACCESS_KEY_ID,
      secretAccessKey: AWS_ENV.AWS_SECRET_ACCESS_KEY,
    },
  });
  try {
    for (const n of [1, 2, 3]) await sqs.send(new CreateQueueCommand({ QueueName: `page-q${n}` }));
    const names = (urls?: string[]) => (urls ?? []).map((u) => u.slice(u.lastIndexOf("/") + 1));
    const all = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: "page-" }));
    assert.deepEqual([names(all.QueueUrls), all.NextToken], [
      ["page-q1", "page-q2", "page-q3"],
      undefined,
    ]);
    const first = await sqs.send(
      new ListQueuesCommand({ QueueNamePrefix: "page-", MaxResults: 2 }),
    );
    assert.deepEqual(names(first.QueueUrls), ["page-q1", "page-q2"]);
    assert.ok(first.NextToken, "a NextToken while queues remain");
    const last = await sqs.send(
      new ListQueuesCommand({
        QueueNamePrefix: "page-",
        MaxResults: 2,
        NextToken: first.NextToken,
      }),
    );
    assert.deepEqual([names(last.QueueUrls), last.NextToken], [["page-q3"], undefined]);
  } finally {
    sqs.destroy();
  }
});

/** A fresh template with versions 1..count (each a distinct AMI id), `defaultVersion` default. */
async function template(count: number, defaultVersion: number): Promise<string> {
  await resetMoto();
  const data = (n: number) => ({ ImageId: `ami-${String(n).padStart(8, "0")}` });
  const { LaunchTemplate } = await ec2.send(
    new CreateLaunchTemplateCommand({ LaunchTemplateName: NAME, LaunchTemplateData: data(1) }),
  );
  for (let n = 2; n <= count; n++) {
    await ec2.send(
      new CreateLaunchTemplateVersionCommand({
        LaunchTemplateName: NAME,
        LaunchTemplateData: data(n),
      }),
    );
  }
  await ec2.send(
    new ModifyLaunchTemplateCommand({
      LaunchTemplateName: NAME,
      DefaultVersion: `${defaultVersion}`,
    }),
  );
  return LaunchTemplate!.LaunchTemplateId!;
}

/** Version numbers, with their AMI's number, that DescribeLaunchTemplateVersions lists. */
async function describe(input: DescribeLaunchTemplateVersionsRequest = {}): Promise<string[]> {
  const out = await ec2.send(
    new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME, ...input }),
  );
  return out.LaunchTemplateVersions!.map((v) =>
    `${v.VersionNumber}:${Number(v.LaunchTemplateData!.ImageId!.slice(4))}${
      v.DefaultVersion ? " default" : ""
    }`
  );
}

Deno.test("moto extension deletes launch template versions like EC2 when they are not the default", async () => {
  const id = await template(5, 4);
  const out = await ec2.send(
    new DeleteLaunchTemplateVersionsCommand({ LaunchTemplateId: id, Versions: ["2", "5"] }),
  );

  assert.deepEqual(out.SuccessfullyDeletedLaunchTemplateVersions, [
    { LaunchTemplateId: id, LaunchTemplateName: NAME, VersionNumber: 2 },
    { LaunchTemplateId: id, LaunchTemplateName: NAME, VersionNumber: 5 },
  ]);
  assert.deepEqual(out.UnsuccessfullyDeletedLaunchTemplateVersions, []);
  assert.deepEqual(await describe(), ["1:1", "3:3", "4:4 default"]);
  assert.deepEqual(await describe({ Versions: ["3", "$Default", "$Latest"] }), [
    "3:3",
    "4:4 default",
    "4:4 default",
  ]);
  assert.deepEqual(await describe({ MinVersion: "2", MaxVersion: "3" }), ["3:3"]);
  await assert.rejects(
    ec2.send(
      new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME, Versions: ["2"] }),
    ),
    { name: "InvalidLaunchTemplateId.VersionNotFound" },
  );

  const made = await ec2.send(
    new CreateLaunchTemplateVersionCommand({
      LaunchTemplateName: NAME,
      LaunchTemplateData: { ImageId: "ami-00000009" },
    }),
  );
  assert.equal(made.LaunchTemplateVersion!.VersionNumber, 6, "a deleted number is never reused");
  await ec2.send(
    new ModifyLaunchTemplateCommand({ LaunchTemplateName: NAME, DefaultVersion: "3" }),
  );
  assert.deepEqual(await describe(), ["1:1", "3:3 default", "4:4", "6:9"]);
  const [listed] = (await ec2.send(new DescribeLaunchTemplatesCommand({ LaunchTemplateIds: [id] })))
    .LaunchTemplates!;
  assert.deepEqual([listed.DefaultVersionNumber, listed.LatestVersionNumber], [3, 6]);
});

Deno.test("moto extension deletes launch template versions like EC2 when some are the default or unknown, refusing only those", async () => {
  const id = await template(3, 2);
  const out = await ec2.send(
    new DeleteLaunchTemplateVersionsCommand({
      LaunchTemplateName: NAME,
      Versions: ["1", "2", "7"],
    }),
  );

  assert.deepEqual(out.SuccessfullyDeletedLaunchTemplateVersions, [
    { LaunchTemplateId: id, LaunchTemplateName: NAME, VersionNumber: 1 },
  ]);
  assert.deepEqual(
    out.UnsuccessfullyDeletedLaunchTemplateVersions!.map((f) => [
      f.LaunchTemplateId,
      f.LaunchTemplateName,
      f.VersionNumber,
      f.ResponseError!.Code,
    ]),
    [
      [id, NAME, 2, "launchTemplateVersionIsDefaultVersion"],
      [id, NAME, 7, "launchTemplateVersionDoesNotExist"],
    ],
  );
  for (const failed of out.UnsuccessfullyDeletedLaunchTemplateVersions!) {
    assert.match(failed.ResponseError!.Message!, new RegExp(`Version ${failed.VersionNumber} `));
  }
  assert.deepEqual(await describe(), ["2:2 default", "3:3"]);

  const again = await ec2.send(
    new DeleteLaunchTemplateVersionsCommand({ LaunchTemplateName: NAME, Versions: ["1"] }),
  );
  assert.deepEqual(
    again.UnsuccessfullyDeletedLaunchTemplateVersions!.map((f) => f.ResponseError!.Code),
    ["launchTemplateVersionDoesNotExist"],
    "a deleted version is gone",
  );
});

Deno.test("moto extension deletes launch template versions like EC2 when the template is unknown, refusing each version", async () => {
  await resetMoto();
  const out = await ec2.send(
    new DeleteLaunchTemplateVersionsCommand({
      LaunchTemplateId: "lt-0123456789abcdef0",
      Versions: ["1", "2"],
    }),
  );
  assert.deepEqual(out.SuccessfullyDeletedLaunchTemplateVersions, []);
  assert.deepEqual(
    out.UnsuccessfullyDeletedLaunchTemplateVersions!.map((
      f,
    ) => [f.VersionNumber, f.ResponseError!.Code]),
    [[1, "launchTemplateIdDoesNotExist"], [2, "launchTemplateIdDoesNotExist"]],
  );
});

Deno.test("moto extension deletes launch template versions like EC2 when the request is invalid, by refusing it whole", async () => {
  const id = await template(2, 1);
  const tooMany = Array.from({ length: 201 }, (_, i) => `${i + 2}`);
  await assert.rejects(
    ec2.send(new DeleteLaunchTemplateVersionsCommand({ LaunchTemplateId: id, Versions: tooMany })),
    { name: "InvalidParameterValue", message: /201 versions; at most 200/ },
  );
  await assert.rejects(
    ec2.send(
      new DeleteLaunchTemplateVersionsCommand({
        LaunchTemplateId: id,
        LaunchTemplateName: NAME,
        Versions: ["2"],
      }),
    ),
    { name: "InvalidParameterCombination" },
  );
  await assert.rejects(
    ec2.send(
      new DeleteLaunchTemplateVersionsCommand({ LaunchTemplateId: id, Versions: ["$Latest"] }),
    ),
    { name: "InvalidParameterValue", message: /\$Latest is not a version number/ },
  );
  assert.deepEqual(await describe(), ["1:1 default", "2:2"], "nothing was deleted");
});

Deno.test("moto extension stamps CreateFleet instances with the launch template version $Default resolved to, like EC2", async () => {
  const id = await template(3, 2);
  const ami = "ami-1e749f67"; // one of moto's built-in images: it validates AMIs
  await ec2.send(
    new CreateLaunchTemplateVersionCommand({
      LaunchTemplateName: NAME,
      LaunchTemplateData: { ImageId: ami, InstanceType: "t3.micro" },
    }),
  );
  await ec2.send(
    new ModifyLaunchTemplateCommand({ LaunchTemplateName: NAME, DefaultVersion: "4" }),
  );

  // As fleet-actions' provision launches: instant, $Default, instance tags of its own.
  const fleet = await ec2.send(
    new CreateFleetCommand({
      Type: "instant",
      LaunchTemplateConfigs: [{
        LaunchTemplateSpecification: { LaunchTemplateName: NAME, Version: "$Default" },
      }],
      TargetCapacitySpecification: {
        TotalTargetCapacity: 2,
        DefaultTargetCapacityType: "on-demand",
      },
      TagSpecifications: [{
        ResourceType: "instance",
        Tags: [{ Key: "InitialRunId", Value: "7" }],
      }],
    }),
  );

  const launched = fleet.Instances!.flatMap((i) => i.InstanceIds!);
  assert.equal(launched.length, 2);
  const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: launched }));
  for (const instance of out.Reservations!.flatMap((r) => r.Instances!)) {
    const tags = Object.fromEntries(instance.Tags!.map((t) => [t.Key, t.Value]));
    assert.deepEqual(tags, {
      "aws:ec2launchtemplate:id": id,
      "aws:ec2launchtemplate:version": "4",
      "aws:ec2:fleet-id": fleet.FleetId,
      InitialRunId: "7",
    });
    assert.equal(instance.ImageId, ami);
  }
});
