/**
 * Phase 1 of the reaper, the reads: every instance record (`PK = TYPE#INSTANCE`, every page) and
 * the keys and `updatedAt` of every heartbeat and worker signal ({@link readTable}); the pool's
 * launch templates (tagged {@link OWNER_TAG} = table, plus the operator's legacy template ids,
 * {@link readTemplates}) and its live instances, each with its proof of ownership
 * ({@link ownership}), then, by id, the instances that records name but the pool listing does not
 * hold ({@link readPool}); the template's default version ({@link readTemplateDefault}). Reads
 * that do not depend on each other run side by side. Under dry-run a table that does not exist
 * yet reads as empty ({@link readTableIfAny}). Reads only; writes nothing.
 *
 * @module
 */
import {
  DescribeInstancesCommand,
  DescribeLaunchTemplatesCommand,
  DescribeLaunchTemplateVersionsCommand,
  type EC2Client,
  type Filter,
  type Instance,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { ResourceNotFoundException } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { type DynamoDBDocumentClient, QueryCommand } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { type Entity, idOf, OWNER_TAG, pk, timestamp } from "../contract.ts";
import { TEMPLATE_ID_TAG, type TemplateDefault } from "../rollout.ts";
import type { Logger } from "../task.ts";
import { chunks, forEachLimit } from "./batching.ts";

/** EC2 states of an instance that still exists (and costs money). */
export const ALIVE_EC2 = ["pending", "running", "stopping", "stopped"];
/**
 * DescribeInstances takes at most 200 filter values in all, over every filter of a call
 * (`FilterLimitExceeded`); moto does not check, so the tests check the requests themselves.
 */
export const FILTER_VALUES = 200;
/**
 * The tag EC2 itself puts on every instance launched from a launch template (RunInstances,
 * CreateFleet), with `aws:ec2launchtemplate:version`. Keys starting with `aws:` are reserved: no
 * user or runner can create, change or delete them, so this one proves which template an
 * instance came from (sources in lib/rollout.ts).
 */
export const TEMPLATE_TAG = TEMPLATE_ID_TAG;

/**
 * An instance record as the reaper reads it: any runner can write the table, so nothing but the
 * id is trusted to have the contract's types (`InstanceRecord` in contract.ts).
 */
export interface Row {
  id: string;
  state: unknown;
  threshold?: unknown;
  runId?: unknown;
  updatedAt?: unknown;
  resourceClass?: unknown;
}

/** A heartbeat or worker signal item's key and age (and a worker signal's `value`). */
export interface ArtifactKey {
  entity: "HEARTBEAT" | "WS";
  id: string;
  updatedAt: unknown;
  /** A worker signal's `{ state, runId }`, as stored. */
  value?: unknown;
}

/** How an instance is proven to belong to the pool. */
export type Proof = "tag" | "template";

/** An instance alive in EC2, as the reaper sees it. */
export interface LiveInstance {
  id: string;
  /** ISO-8601 launch time. */
  launched?: string;
  /** Its proof of belonging to the pool; undefined: not the pool's. */
  proof?: Proof;
  imageId?: string;
  /** Its tags (EC2's launch template tags tell its template version). */
  tags?: Record<string, string>;
}

/** What EC2 says about the pool. */
export interface Pool {
  /** Launch template ids whose instances count as the pool's. */
  templateIds: Set<string>;
  /** The pool's own templates (tagged for this table), by name: their ids. */
  templatesByName: Map<string, string>;
  /** Instances alive and proven the pool's. */
  alive: Map<string, LiveInstance>;
  /** Instances alive in EC2 that a record names but that are not proven the pool's. */
  foreign: Map<string, LiveInstance>;
  /**
   * A targeted read (lib/reaper/sweep.ts): the only instances EC2 was asked about. Absent: the
   * whole pool was listed (a sweep), so an instance missing from `alive` is not alive.
   */
  checked?: ReadonlySet<string>;
  /**
   * Of the instances described by id (a record's, which no listing held, or a targeted run's),
   * those EC2 reports terminated: EC2's word that they ended, with no second look-up.
   */
  ended: Set<string>;
}

export interface TableRead {
  records: Row[];
  /** Every heartbeat's key and age, and the worker signals `signals` asked for. */
  artifacts: ArtifactKey[];
  /** ScannedCount of the instance record pages. */
  scanned: number;
  pages: number;
  /** The table does not exist (yet): read as empty, under dry-run only ({@link readTableIfAny}). */
  missing?: true;
}

/**
 * {@link readTable}, except that under dry-run a table that does not exist yet (a new account:
 * dry-run does not create it, the table task would) reads as empty, marked `missing`: nothing is
 * in it to reap. Otherwise the table task has created it first, and a missing table is an error.
 */
export async function readTableIfAny(
  ddb: DynamoDBDocumentClient,
  table: string,
  options: ReadTableOptions & { dryRun: boolean },
): Promise<TableRead> {
  const { log, onRecords } = options;
  try {
    return await readTable(ddb, table, options);
  } catch (error) {
    if (!options.dryRun || !(error instanceof ResourceNotFoundException)) throw error;
    log.info(`reaper: table ${table} does not exist yet; under dry-run it reads as empty`);
    onRecords?.([]);
    return { records: [], artifacts: [], scanned: 0, pages: 0, missing: true };
  }
}

/**
 * Which worker signals a read returns: `all`, or only the `failed` ones (state `*_FAILED`), which
 * are all a run between sweeps judges (a failed signal drains its idle instance); the others
 * matter to a sweep only (signals without a record, and the launch-to-runner metric).
 */
export type Signals = "all" | "failed";

export interface ReadTableOptions {
  /** Items per page (DynamoDB's 1 MB page when undefined). */
  pageSize: number | undefined;
  log: Logger;
  /** Hears the instance records as soon as they are all read. */
  onRecords?: (records: Row[]) => void;
  /** Default `all`. */
  signals?: Signals;
}

/**
 * Every instance record, every heartbeat's key and `updatedAt`, and the worker signals' keys,
 * `updatedAt` and `value` (all, or the failed ones: {@link Signals}): the three partitions are read
 * side by side, each page after page. `onRecords` hears the instance records as soon as they are
 * all read, before the other partitions may be.
 */
export async function readTable(
  ddb: DynamoDBDocumentClient,
  table: string,
  options: ReadTableOptions,
): Promise<TableRead> {
  const { pageSize, log, onRecords } = options;
  const records: Row[] = [];
  const readRecords = queryAll(
    ddb,
    table,
    "INSTANCE",
    ["state", "threshold", "runId", "updatedAt", "resourceClass"],
    pageSize,
    (item) => {
      records.push({
        id: idOf(String(item.SK)),
        state: item.state,
        threshold: item.threshold,
        runId: item.runId,
        updatedAt: item.updatedAt,
        resourceClass: item.resourceClass,
      });
    },
    (pages) => log.info(`reaper: read ${records.length} instance records (${pages} pages)`),
  ).then((done) => {
    onRecords?.(records);
    return done;
  });
  const heartbeats = readArtifacts(ddb, table, "HEARTBEAT", pageSize);
  const signals = readArtifacts(ddb, table, "WS", pageSize, options.signals ?? "all");
  const [instances, ...artifacts] = await Promise.all([readRecords, heartbeats, signals]);
  return {
    records,
    artifacts: artifacts.flat(),
    scanned: instances.scanned,
    pages: instances.pages,
  };
}

/**
 * Every heartbeat's key and `updatedAt`, or the worker signals' keys, `updatedAt` and `value`
 * (all, or the failed ones only: {@link Signals}).
 */
export async function readArtifacts(
  ddb: DynamoDBDocumentClient,
  table: string,
  entity: "HEARTBEAT" | "WS",
  pageSize: number | undefined,
  signals: Signals = "all",
): Promise<ArtifactKey[]> {
  const artifacts: ArtifactKey[] = [];
  // A worker signal's value (its state) is read too, for the health drains.
  const attributes = entity === "WS" ? ["updatedAt", "value"] : ["updatedAt"];
  const failedOnly = entity === "WS" && signals === "failed" ? FAILED_SIGNALS : undefined;
  await queryAll(
    ddb,
    table,
    entity,
    attributes,
    pageSize,
    (item) => {
      artifacts.push({
        entity,
        id: idOf(String(item.SK)),
        updatedAt: item.updatedAt,
        ...(entity === "WS" ? { value: item.value } : {}),
      });
    },
    undefined,
    failedOnly,
  );
  return artifacts;
}

/** The worker signals whose state says a step failed (PROTOCOL.md: `*_FAILED`). */
const FAILED_SIGNALS: ItemFilter = {
  expression: "contains(#value.#state, :failed)",
  names: { "#value": "value", "#state": "state" },
  values: { ":failed": "_FAILED" },
};

/** A FilterExpression with its names and values. */
interface ItemFilter {
  expression: string;
  names: Record<string, string>;
  values: Record<string, unknown>;
}

async function queryAll(
  ddb: DynamoDBDocumentClient,
  table: string,
  entity: Entity,
  attributes: string[],
  pageSize: number | undefined,
  onItem: (item: Record<string, unknown>) => void,
  onPage?: (pages: number) => void,
  filter?: ItemFilter,
): Promise<{ scanned: number; pages: number }> {
  let scanned = 0;
  let pages = 0;
  let start: Record<string, unknown> | undefined;
  // Placeholders named after their attributes, so a filter can name the same ones.
  const names = Object.fromEntries(attributes.map((a) => [`#${a}`, a]));
  do {
    const out = await ddb.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: "#pk = :pk",
        ProjectionExpression: ["#sk", ...Object.keys(names)].join(", "),
        ...(filter ? { FilterExpression: filter.expression } : {}),
        ExpressionAttributeNames: { "#pk": "PK", "#sk": "SK", ...names, ...filter?.names },
        ExpressionAttributeValues: { ":pk": pk(entity), ...filter?.values },
        ExclusiveStartKey: start,
        Limit: pageSize,
      }),
    );
    for (const item of out.Items ?? []) onItem(item);
    scanned += out.ScannedCount ?? 0;
    pages++;
    start = out.LastEvaluatedKey;
    if (start) onPage?.(pages);
  } while (start);
  return { scanned, pages };
}

/**
 * Whether an instance is proven to be the pool's, by what EC2 says about it (never by a record):
 * the ownership tag with this table as value (the template stamps it), or EC2's own
 * {@link TEMPLATE_TAG} naming one of the pool's templates. An instance tagged for another pool is
 * that pool's, whatever template it came from.
 */
export function ownership(
  instance: Pick<Instance, "Tags">,
  table: string,
  templateIds: Set<string>,
): Proof | undefined {
  const tag = (key: string) => instance.Tags?.find((t) => t.Key === key)?.Value;
  const owner = tag(OWNER_TAG);
  if (owner !== undefined) return owner === table ? "tag" : undefined;
  const template = tag(TEMPLATE_TAG);
  return template !== undefined && templateIds.has(template) ? "template" : undefined;
}

/** The launch templates whose instances count as the pool's. */
export interface Templates {
  /** Their ids: the pool's own, and the operator's legacy ones. */
  templateIds: Set<string>;
  /** The pool's own templates (tagged for this table), by name: their ids. */
  templatesByName: Map<string, string>;
}

/**
 * The pool's launch templates: those carrying the ownership tag, whatever their name, plus
 * `legacyTemplateIds`. The `ID#launch_template` record is not read: runners can write it.
 */
export async function readTemplates(
  ec2: EC2Client,
  table: string,
  legacyTemplateIds: string[],
): Promise<Templates> {
  const templateIds = new Set(legacyTemplateIds);
  const templates = await ec2.send(
    new DescribeLaunchTemplatesCommand({
      Filters: [{ Name: `tag:${OWNER_TAG}`, Values: [table] }],
    }),
  );
  const templatesByName = new Map<string, string>();
  for (const t of templates.LaunchTemplates ?? []) {
    templateIds.add(t.LaunchTemplateId!);
    templatesByName.set(t.LaunchTemplateName!, t.LaunchTemplateId!);
  }
  return { templateIds, templatesByName };
}

/** DescribeInstances calls in flight at once over batches of ids or templates. */
const LOOKUPS = 4;

/**
 * The pool as EC2 sees it: its live instances (by the ownership tag, and by {@link TEMPLATE_TAG}
 * naming one of `templates`), and, by id, the instances records name that those listings do not
 * hold. The listing by tag starts at once; the one by template once `templates` are read; the
 * look-ups by id once both listings and `records` are. Instances are judged in the order of the
 * listings, whichever answers first.
 */
export async function readPool(
  ec2: EC2Client,
  table: string,
  templates: Templates | Promise<Templates>,
  records: Pick<Row, "id">[] | Promise<Pick<Row, "id">[]>,
  log: Logger,
): Promise<Pool> {
  const state = { Name: "instance-state-name", Values: ALIVE_EC2 };
  const byTag = list(describe(ec2, [{ Name: `tag:${OWNER_TAG}`, Values: [table] }, state]));
  const byTemplate = Promise.resolve(templates).then(async ({ templateIds }) => {
    const batches = [...chunks([...templateIds].sort(), FILTER_VALUES - ALIVE_EC2.length)];
    const found: Instance[][] = batches.map(() => []);
    await forEachLimit(batches.keys(), LOOKUPS, async (i) => {
      found[i] = await list(
        describe(ec2, [{ Name: `tag:${TEMPLATE_TAG}`, Values: batches[i] }, state]),
      );
    });
    return found.flat();
  });
  const [known, tagged, templated, named] = await Promise.all([
    templates,
    byTag,
    byTemplate,
    records,
  ]);
  const listed = [...tagged, ...templated].filter((i) => ALIVE_EC2.includes(i.State?.Name ?? ""));
  // Records the listings cannot vouch for: alive elsewhere, or gone.
  const seen = new Set(listed.map((i) => i.InstanceId));
  const unchecked = named.map((r) => r.id).filter((id) => !seen.has(id));
  const looked = await describeIds(ec2, unchecked);
  if (unchecked.length > FILTER_VALUES) {
    log.info(`reaper: looked up ${unchecked.length} instances by id`);
  }
  const alive = new Map<string, LiveInstance>();
  const foreign = new Map<string, LiveInstance>();
  const ended = new Set(
    looked.filter((i) => i.State?.Name === "terminated").map((i) => i.InstanceId!),
  );
  for (const instance of [...listed, ...looked]) {
    if (!ALIVE_EC2.includes(instance.State?.Name ?? "")) continue;
    const live = liveInstance(instance, table, known.templateIds);
    (live.proof ? alive : foreign).set(live.id, live);
  }
  return { ...known, alive, foreign, ended };
}

/**
 * The pool as EC2 sees the instances `ids` name, described by id only (a targeted run: no
 * listing of the pool): `checked` holds exactly those ids.
 */
export async function readTargets(
  ec2: EC2Client,
  table: string,
  templates: Templates,
  ids: string[],
): Promise<Pool> {
  const alive = new Map<string, LiveInstance>();
  const foreign = new Map<string, LiveInstance>();
  const ended = new Set<string>();
  for (const instance of await describeIds(ec2, ids)) {
    if (instance.State?.Name === "terminated") ended.add(instance.InstanceId!);
    if (!ALIVE_EC2.includes(instance.State?.Name ?? "")) continue;
    const live = liveInstance(instance, table, templates.templateIds);
    (live.proof ? alive : foreign).set(live.id, live);
  }
  return { ...templates, alive, foreign, checked: new Set(ids), ended };
}

/** Targeted reads as one (their ids told apart by `checked`). */
export function mergePools(first: Pool, ...rest: Pool[]): Pool {
  const all = [first, ...rest];
  return {
    templateIds: first.templateIds,
    templatesByName: first.templatesByName,
    alive: new Map(all.flatMap((p) => [...p.alive])),
    foreign: new Map(all.flatMap((p) => [...p.foreign])),
    checked: new Set(all.flatMap((p) => [...(p.checked ?? [])])),
    ended: new Set(all.flatMap((p) => [...p.ended])),
  };
}

function liveInstance(instance: Instance, table: string, templateIds: Set<string>): LiveInstance {
  return {
    id: instance.InstanceId!,
    launched: instance.LaunchTime && timestamp(instance.LaunchTime),
    proof: ownership(instance, table, templateIds),
    imageId: instance.ImageId,
    tags: Object.fromEntries((instance.Tags ?? []).map((t) => [t.Key ?? "", t.Value ?? ""])),
  };
}

async function list(instances: AsyncIterable<Instance>): Promise<Instance[]> {
  const found: Instance[] = [];
  for await (const i of instances) found.push(i);
  return found;
}

/**
 * The default version of the pool's template (the one named `name` among those tagged for this
 * table) and its AMI, as EC2 holds them: one DescribeLaunchTemplateVersions call, none when there
 * is no such template (then versions are not judged and nothing is drained for them).
 */
export async function readTemplateDefault(
  ec2: EC2Client,
  pool: Pick<Pool, "templatesByName">,
  name: string,
): Promise<TemplateDefault | null> {
  const id = pool.templatesByName.get(name);
  if (id === undefined) return null;
  const out = await ec2.send(
    new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateId: id, Versions: ["$Default"] }),
  );
  const version = out.LaunchTemplateVersions?.[0];
  if (!version?.VersionNumber) return null;
  return { id, version: version.VersionNumber, ami: version.LaunchTemplateData?.ImageId ?? "" };
}

/**
 * The instances EC2 knows among these ids, in any state: an `instance-id` filter of at most
 * {@link FILTER_VALUES} values and no other filter (an unknown id is no error there, unlike
 * `InstanceIds`, which fails the whole call with InvalidInstanceID.NotFound).
 */
export async function describeIds(ec2: EC2Client, ids: string[]): Promise<Instance[]> {
  const batches = [...chunks(askable(ids), FILTER_VALUES)];
  const found: Instance[][] = batches.map(() => []);
  await forEachLimit(batches.keys(), LOOKUPS, async (i) => {
    found[i] = await list(describe(ec2, [{ Name: "instance-id", Values: batches[i] }]));
  });
  return found.flat();
}

/**
 * The ids that may go into a filter: an id holding a filter's wildcard (`*`, `?`) would match
 * other instances. Such a record (any job can write one) names no instance; nothing is asked of
 * EC2 for it.
 */
export function askable(ids: string[]): string[] {
  return ids.filter((id) => /^[\w-]+$/.test(id));
}

/** Every instance DescribeInstances lists for `filters`, page after page. */
export async function* describe(ec2: EC2Client, filters: Filter[]): AsyncGenerator<Instance> {
  let token: string | undefined;
  do {
    const out = await ec2.send(
      new DescribeInstancesCommand({ Filters: filters, MaxResults: 1000, NextToken: token }),
    );
    for (const reservation of out.Reservations ?? []) yield* reservation.Instances ?? [];
    token = out.NextToken;
  } while (token);
}
