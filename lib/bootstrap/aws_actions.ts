/**
 * The AWS calls the generated bootstrap makes: what its instance profile must allow.
 *
 * @module
 */

/**
 * Every AWS call the generated script makes, with what it touches: what the instance profile must
 * allow (and all it needs). The bootstrap tests check that a real run makes exactly these calls.
 * No EC2 call: the instance ends itself by powering off (the template's shutdown behaviour is
 * terminate), so its role needs no ec2:TerminateInstances.
 */
export const BOOTSTRAP_AWS_ACTIONS: readonly {
  action: string;
  /** DynamoDB: the partition keys (PK) read or written. */
  partitions?: readonly string[];
}[] = [
  { action: "dynamodb:GetItem", partitions: ["TYPE#INSTANCE", "TYPE#METADATA"] },
  { action: "dynamodb:PutItem", partitions: ["TYPE#HEARTBEAT", "TYPE#WS"] },
  // An idle instance withdrawing on an interruption notice: its record's threshold.
  { action: "dynamodb:UpdateItem", partitions: ["TYPE#INSTANCE"] },
];
