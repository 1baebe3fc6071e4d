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
    DefaultTargetCapacityType: "on-demand",
  });
  assert.deepEqual(input.OnDemandOptions, { AllocationStrategy: "lowest-price" });
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

Deno.test("warm pool launch by default asks for what provision's defaults claim: on-demand, c*, m*, r*; spot when asked, capacity-optimized", () => {
  const ctx = { desired: desiredFrom(["--warm-pool", "large=1"]) };
  const template = { id: "lt-0123456789abcdef0", version: 3, ami: "" };
  const now = new Date("2026-01-15T12:00:00Z");
  const input = fleetRequest(ctx, template, ["subnet-1"], "large", { cpu: 2, mmem: 4096 }, 1, now);
  assert.equal(input.TargetCapacitySpecification!.DefaultTargetCapacityType, "on-demand");
  assert.deepEqual(
    input.LaunchTemplateConfigs![0].Overrides![0].InstanceRequirements!.AllowedInstanceTypes,
    ["c*", "m*", "r*"],
  );
  const spot = fleetRequest(
    ctx,
    template,
    ["subnet-1", "subnet-2"],
    "large",
    { cpu: 2, mmem: 4096 },
    1,
    now,
    "spot",
  );
  assert.equal(spot.TargetCapacitySpecification!.DefaultTargetCapacityType, "spot");
  assert.deepEqual(spot.SpotOptions, { AllocationStrategy: "price-capacity-optimized" });
  assert.equal(spot.LaunchTemplateConfigs![0].Overrides!.length, 2, "one request, every subnet");
  assert.notEqual(spot.ClientToken, input.ClientToken);
});
