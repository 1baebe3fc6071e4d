import assert from "node:assert/strict";
import { describeSecurityGroups, describeSubnets, requireOneVpc } from "../lib/network.ts";
import { testContext } from "./support/aws.ts";

Deno.test("network describes subnets and groups in the order named, leaving out unknown ids", async () => {
  const ctx = await testContext();
  const [a, b] = ctx.network.subnetIds;
  const subnets = await describeSubnets(ctx.clients.ec2, [b, "subnet-0000000000000dead", a]);
  assert.deepEqual(subnets.map((s) => [s.id, s.vpc, s.zone]), [
    [b, ctx.network.vpcId, "us-east-1b"],
    [a, ctx.network.vpcId, "us-east-1a"],
  ]);
  const groups = await describeSecurityGroups(ctx.clients.ec2, [ctx.network.securityGroupId]);
  assert.deepEqual(groups, [{
    id: ctx.network.securityGroupId,
    vpc: ctx.network.vpcId,
    name: "runners",
  }]);
  ctx.counter.reset();
  assert.deepEqual(await describeSubnets(ctx.clients.ec2, []), []);
  assert.equal(ctx.counter.total(), 0, "no call for an empty list");
});

Deno.test("requireOneVpc returns the VPC when every id exists in one", () => {
  const found = [{ id: "sg-1", vpc: "vpc-a" }, { id: "sg-2", vpc: "vpc-a" }];
  assert.equal(requireOneVpc("security-group-ids", ["sg-1", "sg-2"], found, "eu-west-1"), "vpc-a");
});

Deno.test("requireOneVpc names every missing id, in one message", () => {
  assert.throws(
    () =>
      requireOneVpc("subnet-ids", ["subnet-1", "subnet-2", "subnet-3"], [
        { id: "subnet-2", vpc: "vpc-a" },
      ], "eu-west-1"),
    new Error(
      "subnet-ids: subnet-1, subnet-3 do not exist in eu-west-1; expected existing ids in the " +
        "runners' VPC",
    ),
  );
});
