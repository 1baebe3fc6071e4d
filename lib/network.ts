/**
 * Checks the network the desired state names: that its subnets and security groups exist in the
 * region and lie in one VPC. EC2 accepts a launch template naming a security group that does not
 * exist, and the table will happily hold a deleted subnet; both surface only when `provision`
 * fails to launch. Read-only: it writes nothing.
 *
 * @module
 */
import {
  type EC2Client,
  paginateDescribeSecurityGroups,
  paginateDescribeSubnets,
} from "npm:@aws-sdk/client-ec2@3.1169.0";

export interface SubnetFacts {
  id: string;
  vpc: string;
  zone: string;
  freeIps: number;
}

export interface SecurityGroupFacts {
  id: string;
  vpc: string;
  name: string;
}

/** The named subnets that exist (a filter, so unknown ids are simply absent). */
export async function describeSubnets(ec2: EC2Client, ids: string[]): Promise<SubnetFacts[]> {
  const found: SubnetFacts[] = [];
  if (ids.length === 0) return found;
  const pages = paginateDescribeSubnets({ client: ec2 }, {
    Filters: [{ Name: "subnet-id", Values: ids }],
  });
  for await (const page of pages) {
    for (const s of page.Subnets ?? []) {
      found.push({
        id: s.SubnetId!,
        vpc: s.VpcId!,
        zone: s.AvailabilityZone!,
        freeIps: s.AvailableIpAddressCount ?? 0,
      });
    }
  }
  return ids.flatMap((id) => found.filter((s) => s.id === id));
}

/** The named security groups that exist (a filter, so unknown ids are simply absent). */
export async function describeSecurityGroups(
  ec2: EC2Client,
  ids: string[],
): Promise<SecurityGroupFacts[]> {
  const found: SecurityGroupFacts[] = [];
  if (ids.length === 0) return found;
  const pages = paginateDescribeSecurityGroups({ client: ec2 }, {
    Filters: [{ Name: "group-id", Values: ids }],
  });
  for await (const page of pages) {
    for (const g of page.SecurityGroups ?? []) {
      found.push({ id: g.GroupId!, vpc: g.VpcId!, name: g.GroupName! });
    }
  }
  return ids.flatMap((id) => found.filter((g) => g.id === id));
}

/**
 * Throws when any of `ids` is missing from `found`, or when `found` spans several VPCs: names the
 * input, the offending ids and what is expected.
 */
export function requireOneVpc(
  input: string,
  ids: string[],
  found: { id: string; vpc: string }[],
  region: string,
): string {
  const missing = ids.filter((id) => !found.some((f) => f.id === id));
  if (missing.length > 0) {
    throw new Error(
      `${input}: ${missing.join(", ")} ${
        missing.length === 1 ? "does" : "do"
      } not exist in ${region}; expected existing ids in the runners' VPC`,
    );
  }
  const vpcs = [...new Set(found.map((f) => f.vpc))];
  if (vpcs.length > 1) {
    const where = vpcs.map((v) =>
      `${v} (${found.filter((f) => f.vpc === v).map((f) => f.id).join(", ")})`
    );
    throw new Error(
      `${input}: spread over ${vpcs.length} VPCs, ${
        where.join(" and ")
      }; runners launch from one ` +
        "template into one VPC",
    );
  }
  return vpcs[0];
}
