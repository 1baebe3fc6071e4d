/**
 * Reconciles the resource pools: one standard SQS queue per resource class, named by
 * {@link queueName}, with the desired visibility timeout and retention, SSE-SQS on and the tag
 * `refresh:pool=<table>`; then the record `ID#resource_class_config`
 * (`{ <class>: { cpu, mmem, queueUrl } }`).
 *
 * Writes only what drifted: CreateQueue for a missing queue, SetQueueAttributes with just the
 * drifted attributes, TagQueue to adopt an untagged queue of a desired name, the record when it
 * differs, and with `--prune` DeleteQueue for the queue of a removed class. A queue is deleted only
 * when it carries this table's tag; a queue tagged for another table is never changed.
 *
 * @module
 */
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ListQueueTagsCommand,
  paginateListQueues,
  type QueueAttributeName,
  SetQueueAttributesCommand,
  type SQSClient,
  TagQueueCommand,
} from "npm:@aws-sdk/client-sqs@3.1169.0";
import {
  METADATA,
  OWNER_TAG,
  QUEUE_SUFFIX,
  queueName,
  queueNamePrefix,
  type ResourceClassRecord,
} from "./contract.ts";
import { duplicateKeys, type InputSpec, type Names, type Reader, show } from "./inputs.ts";
import { readStored, updateMetadata } from "./metadata.ts";
import type { Change, SharedDesired, TaskContext as Context, TaskOutcome } from "./task.ts";

/** The resource-pools task's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "resource-class-config",
    env: ["REFRESH_RESOURCE_CLASS_CONFIG"],
    kind: "json",
    default: "large, xlarge, 2xlarge … 16xlarge (see README)",
    help: 'resource classes, JSON {"<class>": {"cpu": N, "mmem": N}}',
  },
  {
    name: "queue-visibility-timeout",
    env: ["REFRESH_QUEUE_VISIBILITY_TIMEOUT"],
    kind: "int",
    default: "30",
    help: "SQS visibility timeout of pool queues, seconds (0-43200)",
  },
  {
    name: "queue-retention-sec",
    env: ["REFRESH_QUEUE_RETENTION_SEC"],
    kind: "int",
    default: "345600",
    help: "SQS message retention of pool queues, seconds (60-1209600)",
  },
  {
    name: "prune",
    env: ["REFRESH_PRUNE"],
    kind: "bool",
    default: "false",
    help: "delete pool queues whose resource class was removed",
  },
];

export interface ResourceClass {
  cpu: number;
  mmem: number;
}

/** Default resource classes, the same as fleet-actions' defaults. */
export const DEFAULT_RESOURCE_CLASSES: Record<string, ResourceClass> = {
  large: { cpu: 2, mmem: 4096 },
  xlarge: { cpu: 4, mmem: 8192 },
  "2xlarge": { cpu: 8, mmem: 16384 },
  "4xlarge": { cpu: 16, mmem: 32768 },
  "8xlarge": { cpu: 32, mmem: 65536 },
  "12xlarge": { cpu: 48, mmem: 98304 },
  "16xlarge": { cpu: 64, mmem: 131072 },
};

/** The part of the desired state the resource-pools task reads. */
export interface PoolsDesired extends Pick<SharedDesired, "table" | "prefix"> {
  pools: DesiredPools;
}
type TaskContext = Context<PoolsDesired>;

/** The resource-pools task's section of the desired state. */
export interface DesiredPools {
  classes: Record<string, ResourceClass>;
  /** Queue name by class, from {@link queueName}. */
  queueNames: Record<string, string>;
  visibilityTimeoutSec: number;
  retentionSec: number;
  prune: boolean;
}

/** Reads the resource-pools task's inputs, recording problems on the reader. */
export function parsePools(r: Reader, { stem }: Names): DesiredPools {
  const problems = r.problems;
  const classesText = r.raw["resource-class-config"];
  const classesValue = r.json("resource-class-config");
  const classes = parseResourceClasses(classesValue, problems);
  if (typeof classesText === "string" && classesValue !== undefined) {
    for (const key of duplicateKeys(classesText)) {
      problems.push(`resource-class-config: "${key}" is given more than once`);
    }
  }
  const queueNames: Record<string, string> = {};
  if (classes) {
    const byName = new Map<string, string>();
    for (const cls of Object.keys(classes)) {
      const q = queueName(stem, cls);
      if (byName.has(q)) {
        problems.push(
          `resource-class-config: classes "${
            byName.get(q)
          }" and "${cls}" both map to queue name "${q}"`,
        );
      }
      byName.set(q, cls);
      queueNames[cls] = q;
    }
  }
  const visibility = r.int("queue-visibility-timeout", 0, 43200);
  const retention = r.int("queue-retention-sec", 60, 1209600);
  return {
    classes: classes!,
    queueNames,
    visibilityTimeoutSec: visibility!,
    retentionSec: retention!,
    prune: r.bool("prune"),
  };
}

const CLASS_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$/;

/** Parses and validates resource classes: unique names, positive whole cpu and mmem. */
export function parseResourceClasses(
  value: unknown,
  problems: string[],
): Record<string, ResourceClass> | undefined {
  const name = "resource-class-config";
  if (value === undefined) return DEFAULT_RESOURCE_CLASSES;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    problems.push(`${name}: expected a JSON object of classes, got ${show(value)}`);
    return undefined;
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) problems.push(`${name}: expected at least one resource class`);
  const out: Record<string, ResourceClass> = {};
  const seen = new Map<string, string>();
  const before = problems.length;
  for (const [cls, spec] of entries) {
    if (!CLASS_NAME.test(cls)) {
      problems.push(
        `${name}: class "${cls}" must be 1-40 letters, digits, ".", "_" or "-", starting with a letter or digit`,
      );
      continue;
    }
    const folded = cls.toLowerCase();
    if (seen.has(folded)) {
      problems.push(
        `${name}: class "${cls}" duplicates "${seen.get(folded)}" (names are case-insensitive)`,
      );
      continue;
    }
    seen.set(folded, cls);
    if (typeof spec !== "object" || spec === null || Array.isArray(spec)) {
      problems.push(
        `${name}: class "${cls}" must be an object {"cpu": N, "mmem": N}, got ${show(spec)}`,
      );
      continue;
    }
    const s = spec as Record<string, unknown>;
    for (const key of Object.keys(s)) {
      if (key !== "cpu" && key !== "mmem") {
        problems.push(`${name}: class "${cls}" has unknown key "${key}" (expected cpu and mmem)`);
      }
    }
    for (const key of ["cpu", "mmem"] as const) {
      const n = s[key];
      if (typeof n !== "number" || !Number.isSafeInteger(n) || n <= 0) {
        problems.push(`${name}: ${cls}.${key} must be a positive whole number, got ${show(n)}`);
      }
    }
    out[cls] = { cpu: s.cpu as number, mmem: s.mmem as number };
  }
  return problems.length === before ? out : undefined;
}

/** Queue URLs by queue name, of every queue whose name starts with `prefix` (paginated). */
export async function listQueues(
  sqs: SQSClient,
  prefix: string,
  pageSize = 1000,
): Promise<Map<string, string>> {
  const queues = new Map<string, string>();
  for await (
    const page of paginateListQueues({ client: sqs, pageSize }, { QueueNamePrefix: prefix })
  ) {
    for (const url of page.QueueUrls ?? []) queues.set(nameOf(url), url);
  }
  return queues;
}

/** The queue name at the end of a queue URL. */
function nameOf(url: string): string {
  return url.slice(url.lastIndexOf("/") + 1);
}

const READ_ATTRIBUTES: QueueAttributeName[] = [
  "VisibilityTimeout",
  "MessageRetentionPeriod",
  "SqsManagedSseEnabled",
  "KmsMasterKeyId",
];

/** The attributes every pool queue is created with. */
function desiredAttributes(ctx: TaskContext): Record<string, string> {
  const { visibilityTimeoutSec, retentionSec } = ctx.desired.pools;
  return {
    VisibilityTimeout: String(visibilityTimeoutSec),
    MessageRetentionPeriod: String(retentionSec),
    SqsManagedSseEnabled: "true",
  };
}

/**
 * The attributes to set on a queue so it matches, with their current values. Encryption is
 * satisfied by SSE-SQS, or by SSE-KMS when someone chose a KMS key (never downgraded).
 */
function driftOf(
  actual: Record<string, string>,
  desired: Record<string, string>,
): { set: Record<string, string>; was: Record<string, string> } {
  const set: Record<string, string> = {};
  const was: Record<string, string> = {};
  for (const [key, value] of Object.entries(desired)) {
    if (key === "SqsManagedSseEnabled" && actual.KmsMasterKeyId) continue;
    if (actual[key] !== value) {
      set[key] = value;
      was[key] = actual[key] ?? "unset";
    }
  }
  return { set, was };
}

async function tagsOf(sqs: SQSClient, url: string): Promise<Record<string, string>> {
  return (await sqs.send(new ListQueueTagsCommand({ QueueUrl: url }))).Tags ?? {};
}

/** A pool queue that exists and is not the queue of any desired class. */
interface Removed {
  queue: string;
  url: string;
  /** The class, when the record still names it. */
  class?: string;
  /** Whether it carries this table's OWNER_TAG: only then may it be deleted. */
  owned: boolean;
}

export async function reconcileResourcePools(ctx: TaskContext): Promise<TaskOutcome> {
  const { sqs } = ctx.clients;
  const { classes, queueNames, prune } = ctx.desired.pools;
  const table = ctx.desired.table;
  const changes: Change[] = [];
  const warnings: string[] = [];
  const desiredNames = new Set(Object.values(queueNames));
  const attributes = desiredAttributes(ctx);

  const listed = await listQueues(sqs, queueNamePrefix(ctx.desired.prefix));
  // Read once: it tells which removed classes to keep, and whether the record must be rewritten.
  const storedValue = await readStored(ctx, METADATA.resourceClassConfig);
  const stored: ResourceClassRecord =
    typeof storedValue === "object" && storedValue !== null && !Array.isArray(storedValue)
      ? storedValue as ResourceClassRecord
      : {};

  // Read every desired queue first, so a conflict stops the task before any write.
  const plans: {
    cls: string;
    name: string;
    url?: string;
    adopt: boolean;
    drift: ReturnType<typeof driftOf>;
  }[] = [];
  const conflicts: string[] = [];
  for (const [cls, name] of Object.entries(queueNames)) {
    const url = listed.get(name);
    if (url === undefined) {
      plans.push({ cls, name, adopt: false, drift: { set: {}, was: {} } });
      continue;
    }
    const owner = (await tagsOf(sqs, url))[OWNER_TAG];
    if (owner !== undefined && owner !== table) {
      conflicts.push(
        `queue ${name} (class "${cls}") is tagged ${OWNER_TAG}=${owner}, another pool's table, not ${table}; rename the class or remove that tag`,
      );
      continue;
    }
    const actual = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: READ_ATTRIBUTES }),
    );
    plans.push({
      cls,
      name,
      url,
      adopt: owner === undefined,
      drift: driftOf(actual.Attributes ?? {}, attributes),
    });
  }
  if (conflicts.length > 0) throw new Error(conflicts.join("; "));

  // Queues of this pool that no desired class maps to: named in the record for a removed class,
  // or listed with this table's tag.
  const removedClasses = Object.keys(stored).filter((cls) => !(cls in classes));
  const removed = new Map<string, Removed>();
  for (const cls of removedClasses) {
    const queue = nameOf(String(stored[cls]?.queueUrl ?? ""));
    const url = listed.get(queue);
    if (url === undefined || desiredNames.has(queue)) {
      if (!prune) {
        warnings.push(
          `resource class "${cls}" was removed from the desired state and its queue is gone; its record entry is kept (drop it with --prune)`,
        );
      }
      continue;
    }
    removed.set(queue, { queue, url, class: cls, owned: false });
  }
  for (const [queue, url] of listed) {
    if (desiredNames.has(queue) || !queue.endsWith(QUEUE_SUFFIX)) continue;
    const owned = (await tagsOf(sqs, url))[OWNER_TAG] === table;
    const entry = removed.get(queue);
    if (entry) entry.owned = owned;
    else if (owned) removed.set(queue, { queue, url, owned });
  }

  const record: ResourceClassRecord = {};
  for (const plan of plans) {
    let url = plan.url;
    if (url === undefined) {
      changes.push({
        action: "create",
        target: `queue ${plan.name}`,
        detail:
          `class ${plan.cls}: visibility ${attributes.VisibilityTimeout} s, retention ${attributes.MessageRetentionPeriod} s, SSE-SQS`,
      });
      if (!ctx.dryRun) {
        const out = await sqs.send(
          new CreateQueueCommand({
            QueueName: plan.name,
            Attributes: attributes,
            tags: { [OWNER_TAG]: table },
          }),
        );
        url = out.QueueUrl!;
      }
    }
    if (plan.url !== undefined && plan.adopt) {
      changes.push({
        action: "tag",
        target: `queue ${plan.name}`,
        detail: `${OWNER_TAG}=${table}`,
      });
      if (!ctx.dryRun) {
        await sqs.send(new TagQueueCommand({ QueueUrl: plan.url, Tags: { [OWNER_TAG]: table } }));
      }
    }
    const drifted = Object.keys(plan.drift.set);
    if (plan.url !== undefined && drifted.length > 0) {
      changes.push({
        action: "set-attributes",
        target: `queue ${plan.name}`,
        detail: drifted.map((k) => `${k} ${plan.drift.was[k]} -> ${plan.drift.set[k]}`).join(", "),
      });
      if (!ctx.dryRun) {
        await sqs.send(
          new SetQueueAttributesCommand({ QueueUrl: plan.url, Attributes: plan.drift.set }),
        );
      }
    }
    const { cpu, mmem } = classes[plan.cls];
    record[plan.cls] = { cpu, mmem, queueUrl: url ?? `(new queue ${plan.name})` };
  }

  for (const entry of removed.values()) {
    const what = entry.class === undefined
      ? `queue ${entry.queue} is tagged for this pool but no resource class maps to it; it`
      : `resource class "${entry.class}" was removed from the desired state; its queue ${entry.queue}`;
    if (!prune) {
      warnings.push(`${what} is kept (delete it with --prune)`);
    } else if (!entry.owned) {
      warnings.push(
        `${what} is not deleted: it does not carry the tag ${OWNER_TAG}=${table}, so it may not be this pool's`,
      );
    } else {
      changes.push({
        action: "delete",
        target: `queue ${entry.queue}`,
        detail: entry.class === undefined ? "no class maps to it" : `class ${entry.class} removed`,
      });
      if (!ctx.dryRun) await sqs.send(new DeleteQueueCommand({ QueueUrl: entry.url }));
    }
  }
  // Without --prune nothing is deleted: a removed class keeps its entry in the record.
  if (!prune) { for (const cls of removedClasses) record[cls] = stored[cls]; }

  const change = await updateMetadata(
    ctx,
    METADATA.resourceClassConfig,
    storedValue,
    record,
    describeRecord,
  );
  if (change) changes.push(change);

  const queues = (n: number) => `${n} queue${n === 1 ? "" : "s"}`;
  const parts = [
    ["create", "created"],
    ["set-attributes", "repaired"],
    ["tag", "adopted"],
    ["delete", "deleted"],
  ].flatMap(([action, done]) => {
    const n = changes.filter((c) => c.action === action).length;
    if (n === 0) return [];
    return [
      ctx.dryRun
        ? `${action === "set-attributes" ? "repair" : action} ${queues(n)}`
        : `${queues(n)} ${done}`,
    ];
  });
  if (change) parts.push(ctx.dryRun ? "write the record" : "record written");
  return {
    summary: changes.length === 0
      ? `${queues(plans.length)} and the record match`
      : `${ctx.dryRun ? "would " : ""}${parts.join(", ")}`,
    found: {
      prefix: queueNamePrefix(ctx.desired.prefix),
      queues: Object.fromEntries(plans.map((p) => [p.cls, {
        queue: p.name,
        url: p.url ?? null,
        state: p.url === undefined
          ? "missing"
          : Object.keys(p.drift.set).length > 0
          ? "drifted"
          : p.adopt
          ? "untagged"
          : "ok",
      }])),
      removed: [...removed.values()].map((r) => ({
        queue: r.queue,
        class: r.class ?? null,
        owned: r.owned,
      })),
      record: stored,
    },
    changes,
    warnings,
  };
}

/** A record as `class (cpu/mmem) queue`, for change details. */
function describeRecord(value: unknown): string {
  return Object.entries(value as ResourceClassRecord)
    .map(([cls, entry]) =>
      `${cls} (${entry?.cpu}/${entry?.mmem}) ${nameOf(String(entry?.queueUrl))}`
    )
    .join(", ");
}
