/**
 * The table's data contract, shared with fleet-actions' `provision` and `release`: key layout,
 * item shapes, timestamp format and default resource names. Other programs read what refresh
 * writes, so everything here is exactly as DESIGN.md describes; only additions are allowed.
 *
 * @module
 */
import { createHash } from "node:crypto";

export const PK = "PK";
export const SK = "SK";

export type Entity = "METADATA" | "INSTANCE" | "HEARTBEAT" | "WS";

/** Partition key of an entity: `TYPE#<ENTITY>`. */
export function pk(entity: Entity): string {
  return `TYPE#${entity}`;
}

/** Sort key of an identifier: `ID#<id>`. */
export function sk(id: string): string {
  return `ID#${id}`;
}

/** The identifier inside a sort key (`ID#i-123` -> `i-123`). */
export function idOf(sortKey: string): string {
  return sortKey.startsWith("ID#") ? sortKey.slice(3) : sortKey;
}

/** ISO-8601 UTC without fractional seconds (`2025-04-24T18:31:04Z`); readers compare strings. */
export function timestamp(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, "Z");
}

/** Metadata record ids (`SK = ID#<id>` under `PK = TYPE#METADATA`). */
export const METADATA = {
  idleTimeSec: "idle_time_sec",
  maxRuntimeMin: "max_runtime_min",
  subnetIds: "subnet_ids",
  resourceClassConfig: "resource_class_config",
  launchTemplate: "launch_template",
  registrationToken: "gh_registration_token",
} as const;

/** `ID#launch_template`'s value. User data itself is never stored, only its hash. */
export interface LaunchTemplateRecord {
  name: string;
  ami: string;
  iamInstanceProfile: string;
  securityGroupIds: string[];
  userDataHash: string;
  userData: "";
  userDataBase64: "";
  /** Additions of this project: the `lt-…` id and the default version number. */
  id: string;
  version: number;
}

/** `ID#resource_class_config`'s value: one entry per class. */
export type ResourceClassRecord = Record<string, { cpu: number; mmem: number; queueUrl: string }>;

/** `ID#gh_registration_token`'s value. */
export interface RegistrationTokenRecord {
  token: string;
  /** When refresh fetched it. */
  timestamp: string;
  /** When GitHub says it expires. */
  expires_at: string;
}

export type InstanceState = "created" | "running" | "idle" | "claimed" | "terminated";

/** An instance record as stored (`PK = TYPE#INSTANCE`). */
export interface InstanceRecord {
  PK: string;
  SK: string;
  entityType: string;
  identifier: string;
  state: InstanceState;
  threshold: string;
  runId: string;
  resourceClass?: string;
  instanceType?: string;
  usageClass?: string;
  updatedAt: string;
  /** Addition: epoch seconds after which DynamoDB TTL removes a terminated record. */
  expiresAt?: number;
}

/** Name of the TTL attribute refresh sets on terminated instance records. */
export const TTL_ATTRIBUTE = "expiresAt";

/** A full item for an entity, with the contract's common attributes. */
export function item(
  entity: Entity,
  id: string,
  now: Date,
  attributes: Record<string, unknown>,
): Record<string, unknown> {
  return {
    [PK]: pk(entity),
    [SK]: sk(id),
    entityType: entity,
    identifier: id,
    ...attributes,
    updatedAt: timestamp(now),
  };
}

/** Tag the launch template stamps on instances and volumes; its value is the pool's table. */
export const OWNER_TAG = "refresh:pool";

/**
 * Tags provision puts on every instance it launches (`AllowSelfTermination=true` and
 * `InitialRunId=<run id>`), on top of the launch template's: the bootstrap reads the second from
 * instance metadata, and the instance policy lets an instance terminate itself only with the
 * first.
 */
export const PROVISION_INSTANCE_TAGS = ["AllowSelfTermination", "InitialRunId"] as const;

/**
 * The label every runner registration of this pool carries besides its run id label, naming the
 * pool (its region and table) so the reaper's runner cleanup can prove a registration is its own.
 * Jobs target the run id label, so an extra label never changes which jobs a runner takes. Hashed
 * to keep it short and within GitHub's label characters: `refresh-pool-<16 hex>`.
 */
export function poolRunnerLabel(region: string, table: string): string {
  return `refresh-pool-${sha256(`${region}/${table}`).slice(0, 16)}`;
}

/** EC2's limit on tags per resource. */
export const EC2_MAX_TAGS = 50;

/** SHA-256 hex digest of a string (user data is compared and stored by this hash). */
export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

const QUEUE_MAX = 80;
/** Every pool queue's name ends with this. */
export const QUEUE_SUFFIX = "-ci-pool";
/** Longest class part {@link queueName} keeps (resource_pools.ts allows class names of 1-40). */
const CLASS_MAX = 40;
const HASH_LENGTH = 8;

/** Replaces every character SQS forbids in a queue name with `-`. */
function sqsSafe(text: string): string {
  return text.replace(/[^A-Za-z0-9_-]/g, "-");
}

/**
 * The queue of a resource class: `<prefix>-<class>-ci-pool`, kept to SQS's alphabet (letters,
 * digits, `-`, `_`) and 80 characters. When a name had to be changed to fit, a short hash of the
 * original class name is added so two classes can never share a queue.
 */
export function queueName(prefix: string, resourceClass: string): string {
  const plain = `${prefix}-${resourceClass}${QUEUE_SUFFIX}`;
  if (/^[A-Za-z0-9_-]+$/.test(plain) && plain.length <= QUEUE_MAX) return plain;
  const hash = sha256(resourceClass).slice(0, HASH_LENGTH);
  const tail = `-${sqsSafe(resourceClass).slice(0, CLASS_MAX)}-${hash}${QUEUE_SUFFIX}`;
  return `${sqsSafe(prefix).slice(0, QUEUE_MAX - tail.length)}${tail}`;
}

/**
 * What every {@link queueName} of a pool starts with, whatever the class: the name prefix to list
 * the pool's queues by. Other pools' names can share it (`acme-widgets-` and
 * `acme-widgets-2-…`), so a listed queue is only ours when it carries {@link OWNER_TAG}.
 */
export function queueNamePrefix(prefix: string): string {
  const room = QUEUE_MAX - (1 + CLASS_MAX + 1 + HASH_LENGTH + QUEUE_SUFFIX.length);
  const clean = sqsSafe(prefix);
  return clean.length <= room ? `${clean}-` : clean.slice(0, room);
}
