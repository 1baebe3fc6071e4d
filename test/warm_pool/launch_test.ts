import assert from "node:assert/strict";
import { OWNER_TAG } from "../../lib/contract.ts";
import { fleetRequest } from "../../lib/warm_pool/launch.ts";
import { desiredFrom } from "../support/aws.ts";

const TABLE = "acme-widgets-ci-table";

Deno.test("warm pool launch asks as provision does: CreateFleet instant, $Default, a subnet override each with the class's CPU and memory", () => {
  const ctx = {
    desired: desiredFrom([
      "--warm-pool",
      "xlarge=1",
      "--warm-pool-instance-types",
      "c6i.*,m7i.xlarge",
    ]),
  };
  const input = fleetRequest(
    ctx,
    { id: "lt-0123456789abcdef0", version: 3, ami: "" },
    ["subnet-1", "subnet-2"],
    "xlarge",
    { cpu: 4, mmem: 8192 },
    3,
    new Date("2026-01-15T12:00:00Z"),
  );
  assert.equal(input.Type, "instant");
  assert.deepEqual(input.LaunchTemplateConfigs![0].LaunchTemplateSpecification, {
    LaunchTemplateId: "lt-0123456789abcdef0",
    Version: "$Default",
  });
  assert.deepEqual(
    input.LaunchTemplateConfigs![0].Overrides!.map((o) => o.SubnetId),
    ["subnet-1", "subnet-2"],
  );
  assert.deepEqual(input.LaunchTemplateConfigs![0].Overrides![1].InstanceRequirements, {
    VCpuCount: { Min: 4, Max: 4 },
    MemoryMiB: { Min: 8192 },
    BurstablePerformance: "excluded",
    AllowedInstanceTypes: ["c6i.*", "m7i.xlarge"],
  });
  assert.deepEqual(input.TargetCapacitySpecification, {
    TotalTargetCapacity: 3,
    DefaultTargetCapacityType: "spot",
  });
  assert.deepEqual(input.TagSpecifications, [{
    ResourceType: "instance",
    Tags: [
      { Key: "AllowSelfTermination", Value: "true" },
      { Key: "InitialRunId", Value: "warm-xlarge-20260115T120000Z" },
      { Key: OWNER_TAG, Value: TABLE },
      { Key: "refresh:warm-pool", Value: "xlarge" },
    ],
  }]);
  // Not a workflow run id, and one the bootstrap accepts (letters, digits, . _ -).
  assert.match(input.TagSpecifications![0].Tags![1].Value!, /^(?!\d+$)[A-Za-z0-9._-]{1,128}$/);
});
