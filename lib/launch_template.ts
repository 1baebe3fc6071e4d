/**
 * Reconciles the EC2 launch template `provision` launches runners from, against EC2 itself.
 *
 * The AMI is resolved first (an id, or the newest available image matching a name pattern), and
 * the security groups are checked to exist in one VPC (see lib/network.ts). The user data is the
 * generated bootstrap (lib/bootstrap.ts, with the runner version and checksums resolved from
 * actions/runner's releases when not given: lib/runner_release.ts) or the operator's own script,
 * gzip-compressed when it would not fit EC2's limit otherwise (lib/user_data.ts).
 *
 * Every version refresh creates carries the fingerprint of its desired data (a SHA-256 of the
 * data's canonical JSON, user data by content) in its `VersionDescription`. The default version
 * is equal to the desired data when its fingerprint is the desired one; only a version refresh did
 * not make (a template taken over, a default set by hand) is compared field by field with EC2's
 * answer. So defaults EC2 adds to what it echoes never count as drift, and an unchanged desired
 * state never makes a version. A missing template is created; a drifted one gets a new version
 * carrying the full data, made the default (or an existing equal version is made the default
 * again); an equal one is left alone. Old versions beyond the newest `keepVersions` are deleted, never the default one, and
 * the template itself never is, but for one this run made that EC2 flagged as invalid: EC2 accepts
 * some invalid parameters with a warning (`Warning.Errors`) instead of an error, and such a
 * template or version is deleted again, so no later run takes it for good, and the task fails
 * with EC2's codes and messages.
 *
 * Writes: CreateLaunchTemplate, CreateLaunchTemplateVersion, ModifyLaunchTemplate,
 * DeleteLaunchTemplateVersions, DeleteLaunchTemplate (only a template this run made with a
 * warning), CreateTags (the ownership tag on an adopted template), and the `ID#launch_template`
 * metadata record.
 *
 * Its inputs, and the parser of its section of the desired state, are in
 * lib/launch_template_inputs.ts.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { isDeepStrictEqual } from "node:util";
import {
  type _InstanceType,
  CreateLaunchTemplateCommand,
  CreateLaunchTemplateVersionCommand,
  CreateTagsCommand,
  DeleteLaunchTemplateCommand,
  DeleteLaunchTemplateVersionsCommand,
  DescribeImagesCommand,
  DescribeLaunchTemplatesCommand,
  type EC2Client,
  type Image,
  type LaunchTemplate,
  type LaunchTemplateBlockDeviceMappingRequest,
  type LaunchTemplateVersion,
  ModifyLaunchTemplateCommand,
  paginateDescribeImages,
  paginateDescribeLaunchTemplateVersions,
  type RequestLaunchTemplateData,
  type ResponseLaunchTemplateData,
  type ValidationWarning,
  type VolumeType,
} from "npm:@aws-sdk/client-ec2@3.1169.0";
import { type LaunchTemplateRecord, METADATA, OWNER_TAG, sha256 } from "./contract.ts";
import type { AmiSource, DesiredLaunchTemplate } from "./launch_template_inputs.ts";
import { reconcileMetadata } from "./metadata.ts";
import { describeSecurityGroups, requireOneVpc } from "./network.ts";
import { resolveRunner } from "./runner_release.ts";
import type { Change, SharedDesired, TaskContext as Context, TaskOutcome } from "./task.ts";
import {
  type EncodedUserData,
  encodeUserData,
  generatedScript,
  isEnterpriseServer,
  USER_DATA_MAX_BYTES,
  userDataContent,
} from "./user_data.ts";

/**
 * Instances may reach the metadata service only with an IMDSv2 session token. With a hop limit of
 * 1 the token's answer does not survive the extra hop of a container's bridge network, so job
 * containers cannot read the instance role's credentials (the pool's registration token and
 * signals are behind them; the generated bootstrap blocks jobs on the host itself). When jobs are
 * meant to use the instance role (the generated bootstrap's `--job-metadata open`), the limit is 2,
 * so containers can too, as AWS recommends for container hosts. Instance tags are readable from
 * metadata when `tags` is set: the bootstrap learns its first run id from the tag `InitialRunId`
 * that provision puts on the instance (PROTOCOL.md).
 */
export function metadataOptions(tags: boolean, jobsUseMetadata = false) {
  return {
    HttpTokens: "required",
    HttpEndpoint: "enabled",
    HttpPutResponseHopLimit: jobsUseMetadata ? 2 : 1,
    HttpProtocolIpv6: "disabled",
    InstanceMetadataTags: tags ? "enabled" : "disabled",
  } as const;
}

/** The part of the desired state the launch-template task reads. */
export interface LaunchTemplateDesired extends Pick<SharedDesired, "region" | "table"> {
  launchTemplate: DesiredLaunchTemplate;
  /** Where the runner's release (and its checksums) are looked up. */
  github: { apiUrl: string };
}
type TaskContext = Context<LaunchTemplateDesired>;

/** DeleteLaunchTemplateVersions takes at most this many versions per call. */
const DELETE_BATCH = 200;

/** The id reported for a template that dry-run would create. */
const PLANNED_ID = "(new)";

export async function reconcileLaunchTemplate(ctx: TaskContext): Promise<TaskOutcome> {
  const { ec2 } = ctx.clients;
  const lt = ctx.desired.launchTemplate;
  if (!lt.ami) throw new TypeError("launch-template: no AMI in the desired state");
  const { image, matches } = await resolveImage(ec2, lt.ami, ctx.desired.region);
  // EC2 takes a template naming groups that do not exist; launches from it would all fail.
  const groups = await describeSecurityGroups(ec2, lt.securityGroupIds);
  const vpc = requireOneVpc("security-group-ids", lt.securityGroupIds, groups, ctx.desired.region);
  const userData = await buildUserData(ctx);
  const data = templateData(ctx.desired, image, userData.encoded);
  const template = await findTemplate(ec2, lt.name);
  const out: Outcome = { changes: [], warnings: [...userData.warnings] };
  let state: TemplateState;
  if (template) {
    await claim(ctx, template, out);
    state = await makeDefault(ctx, template, data, out);
    state = await prune(ctx, state, out);
  } else {
    state = await create(ctx, data, out);
  }
  const { id, version, versions } = state;
  const { changes, warnings } = out;
  const record: LaunchTemplateRecord = {
    name: lt.name,
    ami: image.ImageId!,
    iamInstanceProfile: profileOf(ctx.desired),
    securityGroupIds: lt.securityGroupIds,
    userDataHash: sha256(userData.script),
    userData: "",
    userDataBase64: "",
    id,
    version,
  };
  const { stored, change } = await reconcileMetadata(
    ctx,
    METADATA.launchTemplate,
    record,
    (value) => {
      const r = (value ?? {}) as Partial<LaunchTemplateRecord>;
      return `${r.id} version ${r.version}, ${r.ami}, user data ${r.userDataHash?.slice(0, 12)}…`;
    },
  );
  if (change) changes.push(change);

  return {
    summary: changes.length === 0
      ? `${lt.name} version ${version} matches (${image.ImageId})`
      : `${lt.name}: ${changes.map((c) => c.action).join(", ")}`,
    found: {
      ami: {
        id: image.ImageId,
        name: image.Name,
        creationDate: image.CreationDate,
        ...("namePattern" in lt.ami ? { namePattern: lt.ami.namePattern, matches } : {}),
      },
      securityGroups: { vpc, ...Object.fromEntries(groups.map((g) => [g.id, g.name])) },
      userData: userData.found,
      template: template
        ? {
          id,
          defaultVersion: template.DefaultVersionNumber,
          latestVersion: template.LatestVersionNumber,
          owner: template.Tags?.find((t) => t.Key === OWNER_TAG)?.Value ?? null,
        }
        : null,
      versions,
      record: stored ?? null,
    },
    changes,
    warnings,
  };
}

interface Outcome {
  changes: Change[];
  warnings: string[];
}

/** A template's id, default version and the versions it holds (as planned under dry-run). */
interface TemplateState {
  id: string;
  version: number;
  versions: number[];
}

async function create(
  ctx: TaskContext,
  data: RequestLaunchTemplateData,
  out: Outcome,
): Promise<TemplateState> {
  const { name } = ctx.desired.launchTemplate;
  out.changes.push({
    action: "create",
    target: `launch template ${name}`,
    detail: `version 1, ${data.ImageId}`,
  });
  if (ctx.dryRun) return { id: PLANNED_ID, version: 1, versions: [1] };
  const created = await ctx.clients.ec2.send(
    new CreateLaunchTemplateCommand({
      LaunchTemplateName: name,
      VersionDescription: describeFingerprint(fingerprint(data)),
      LaunchTemplateData: data,
      TagSpecifications: [{
        ResourceType: "launch-template",
        Tags: [{ Key: OWNER_TAG, Value: ctx.desired.table }],
      }],
      ClientToken: crypto.randomUUID(),
    }),
  );
  const id = created.LaunchTemplate!.LaunchTemplateId!;
  await refuseWarned(
    created.Warning,
    `launch template ${name} (${id})`,
    () => ctx.clients.ec2.send(new DeleteLaunchTemplateCommand({ LaunchTemplateId: id })),
  );
  return { id, version: 1, versions: [1] };
}

/**
 * Fails when EC2 made a template or version with a warning (invalid parameters it accepted), after
 * deleting it with `undo`, so no later run finds it equal to the desired data and records it.
 */
async function refuseWarned(
  warning: ValidationWarning | undefined,
  what: string,
  undo: () => Promise<unknown>,
): Promise<void> {
  const errors = warning?.Errors ?? [];
  if (errors.length === 0) return;
  const said = errors.map((e) => `${e.Code}: ${e.Message}`).join("; ");
  const undone = await undo().then(
    () => "deleted it again",
    (error) => `could not delete it (${(error as Error).message}); delete it by hand`,
  );
  throw new Error(
    `EC2 made ${what} with warnings about invalid parameters (${said}); refresh ${undone} ` +
      "and did not record it: fix the launch template inputs",
  );
}

/**
 * Checks the template belongs to this pool. One tagged for another pool is refused; an untagged
 * one (made by hand or by another tool) is adopted and tagged.
 */
async function claim(ctx: TaskContext, template: LaunchTemplate, out: Outcome): Promise<void> {
  const { name } = ctx.desired.launchTemplate;
  const id = template.LaunchTemplateId!;
  const owner = template.Tags?.find((t) => t.Key === OWNER_TAG)?.Value;
  if (owner === ctx.desired.table) return;
  if (owner !== undefined) {
    throw new Error(
      `launch template ${name} (${id}) belongs to the pool of table "${owner}" (tag ${OWNER_TAG}), not "${ctx.desired.table}"; set another --launch-template-name`,
    );
  }
  out.warnings.push(`adopted ${name} (${id}), which had no ${OWNER_TAG} tag`);
  out.changes.push({
    action: "tag",
    target: `launch template ${name}`,
    detail: `${OWNER_TAG}=${ctx.desired.table}`,
  });
  if (ctx.dryRun) return;
  await ctx.clients.ec2.send(
    new CreateTagsCommand({
      Resources: [id],
      Tags: [{ Key: OWNER_TAG, Value: ctx.desired.table }],
    }),
  );
}

/**
 * Makes the default version hold the desired data: nothing when it does; else the newest
 * existing version that does becomes the default; else a new version with the full data (and the
 * data's fingerprint) does.
 */
async function makeDefault(
  ctx: TaskContext,
  template: LaunchTemplate,
  data: RequestLaunchTemplateData,
  out: Outcome,
): Promise<TemplateState> {
  const { ec2 } = ctx.clients;
  const id = template.LaunchTemplateId!;
  const target = `launch template ${ctx.desired.launchTemplate.name}`;
  const all = await listVersions(ec2, id);
  const versions = all.map((v) => v.VersionNumber!);
  let version = template.DefaultVersionNumber!;
  const wanted = fingerprint(data);
  const current = all.find((v) => v.VersionNumber === version);
  const drift = current ? versionDrift(data, wanted, current) : ["no default version"];
  if (drift.length === 0) return { id, version, versions };

  const equal = all.filter((v) => versionDrift(data, wanted, v).length === 0)
    .sort((a, b) => b.VersionNumber! - a.VersionNumber!)[0];
  if (equal) {
    version = equal.VersionNumber!;
    out.changes.push({
      action: "set-default",
      target,
      detail: `version ${version}, equal to the desired data (${drift.join("; ")})`,
    });
  } else {
    // EC2 never reuses a version number, so the next one is predictable for dry-run.
    version = template.LatestVersionNumber! + 1;
    out.changes.push({ action: "new-version", target, detail: `${version}: ${drift.join("; ")}` });
    if (!ctx.dryRun) {
      const created = await ec2.send(
        new CreateLaunchTemplateVersionCommand({
          LaunchTemplateId: id,
          VersionDescription: describeFingerprint(wanted),
          LaunchTemplateData: data,
          ClientToken: crypto.randomUUID(),
        }),
      );
      version = created.LaunchTemplateVersion!.VersionNumber!;
      const made = String(version);
      await refuseWarned(created.Warning, `version ${made} of ${target}`, () =>
        ec2.send(
          new DeleteLaunchTemplateVersionsCommand({ LaunchTemplateId: id, Versions: [made] }),
        ));
    }
    versions.push(version);
  }
  if (!ctx.dryRun) {
    await ec2.send(
      new ModifyLaunchTemplateCommand({ LaunchTemplateId: id, DefaultVersion: String(version) }),
    );
  }
  return { id, version, versions };
}

/**
 * How a version differs from the desired data, one entry per field (none: equal). A version
 * refresh made is judged by its fingerprint alone; its fields are shown only to say what changed
 * (the desired fields whose value differs, not the extra ones EC2 answers with). Any other version
 * is compared field by field.
 */
export function versionDrift(
  desired: RequestLaunchTemplateData,
  wanted: string,
  version: LaunchTemplateVersion,
): string[] {
  const actual = version.LaunchTemplateData ?? {};
  const recorded = fingerprintOf(version.VersionDescription);
  if (recorded === undefined) return differences(desired, actual);
  if (recorded === wanted) return [];
  const changed = differences(desired, actual, { desiredKeysOnly: true });
  return changed.length > 0 ? changed : [`fingerprint ${recorded.slice(0, 12)}…`];
}

/** The prefix of the fingerprint in a version's description. */
const FINGERPRINT_MARK = "refresh desired-data sha256:";

/** The description of a version refresh creates: its data's fingerprint. */
export function describeFingerprint(hex: string): string {
  return `${FINGERPRINT_MARK}${hex}`;
}

/** The fingerprint a version's description records, if refresh created it. */
export function fingerprintOf(description: string | undefined): string | undefined {
  if (!description?.startsWith(FINGERPRINT_MARK)) return undefined;
  const hex = description.slice(FINGERPRINT_MARK.length);
  return /^[0-9a-f]{64}$/.test(hex) ? hex : undefined;
}

/**
 * The fingerprint of launch template data: the SHA-256 of its canonical form (see canonical) as
 * JSON with sorted keys at every level, so equal data has one fingerprint however it is built.
 */
export function fingerprint(data: RequestLaunchTemplateData): string {
  return sha256(sortedJson(canonical(data)));
}

/** JSON with every object's keys sorted. */
function sortedJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(sortedJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${sortedJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** Deletes all versions but the newest `keepVersions` and the default; refusals are warnings. */
async function prune(
  ctx: TaskContext,
  state: TemplateState,
  out: Outcome,
): Promise<TemplateState> {
  const { name, keepVersions } = ctx.desired.launchTemplate;
  const stale = pruneable(state.versions, state.version, keepVersions);
  for (let i = 0; i < stale.length; i += DELETE_BATCH) {
    const batch = stale.slice(i, i + DELETE_BATCH);
    out.changes.push({
      action: "prune",
      target: `launch template ${name}`,
      detail: `versions ${batch.join(", ")}`,
    });
    if (ctx.dryRun) continue;
    const deleted = await ctx.clients.ec2.send(
      new DeleteLaunchTemplateVersionsCommand({
        LaunchTemplateId: state.id,
        Versions: batch.map(String),
      }),
    );
    for (const failed of deleted.UnsuccessfullyDeletedLaunchTemplateVersions ?? []) {
      const error = failed.ResponseError;
      out.warnings.push(
        `could not delete version ${failed.VersionNumber} of ${name}: ${error?.Code} ${error?.Message}`,
      );
    }
  }
  return { ...state, versions: state.versions.filter((v) => !stale.includes(v)) };
}

/** The image an AMI source names: the id itself, or the newest available match of a pattern. */
export async function resolveImage(
  ec2: EC2Client,
  source: AmiSource,
  region: string,
): Promise<{ image: Image; matches: number }> {
  if ("id" in source) {
    let images: Image[] = [];
    try {
      images = (await ec2.send(new DescribeImagesCommand({ ImageIds: [source.id] }))).Images ?? [];
    } catch (error) {
      if (!(error instanceof Error && error.name.startsWith("InvalidAMIID"))) throw error;
    }
    const image = images[0];
    if (!image) {
      throw new Error(
        `ami: ${source.id} does not exist in ${region} or is not shared with this account`,
      );
    }
    if (image.State !== "available") {
      throw new Error(`ami: ${source.id} is ${image.State}; expected an available image`);
    }
    return { image, matches: 1 };
  }
  const images: Image[] = [];
  const pages = paginateDescribeImages({ client: ec2, pageSize: 1000 }, {
    Owners: source.owners,
    Filters: [
      { Name: "name", Values: [source.namePattern] },
      { Name: "state", Values: ["available"] },
    ],
  });
  for await (const page of pages) images.push(...page.Images ?? []);
  if (images.length === 0) {
    throw new Error(
      `ami-name: no available image in ${region} named like "${source.namePattern}" owned by ${
        source.owners.join(", ")
      }`,
    );
  }
  // ISO-8601 timestamps compare as strings; the id breaks ties so the pick is stable.
  const key = (i: Image) => `${i.CreationDate ?? ""} ${i.ImageId}`;
  const newest = images.reduce((a, b) => (key(b) > key(a) ? b : a));
  return { image: newest, matches: images.length };
}

/** The user data: its script (never shown), what EC2 gets, and what the report says of it. */
interface UserData {
  script: string;
  encoded: EncodedUserData;
  found: Record<string, unknown>;
  /** What the report should say (a runner version GitHub refuses, a check not made). */
  warnings: string[];
}

/**
 * The user data of the desired state: the operator's script, or the generated bootstrap with the
 * runner version and checksums given or resolved from actions/runner's releases; encoded to fit
 * EC2's limit.
 */
async function buildUserData(ctx: TaskContext): Promise<UserData> {
  const source = ctx.desired.launchTemplate.userData;
  let script: string;
  let found: Record<string, unknown>;
  const warnings: string[] = [];
  if (source.kind === "file") {
    script = source.script;
    found = { source: `--user-data ${source.path}` };
  } else {
    const { runner } = source.inputs;
    const { apiUrl } = ctx.desired.github;
    const resolved = await resolveRunner(runner, {
      github: ctx.clients.github,
      apiUrl,
      enterprise: isEnterpriseServer(apiUrl),
      now: ctx.now(),
    });
    warnings.push(...resolved.warnings);
    script = generatedScript(source.inputs, resolved.checksums, resolved.version);
    found = {
      source: "generated bootstrap",
      githubUrl: source.inputs.githubUrl,
      ...(source.inputs.runnerGroup ? { runnerGroup: source.inputs.runnerGroup } : {}),
      runner: {
        version: resolved.version,
        ...(runner.version !== resolved.version ? { requested: runner.version } : {}),
        sha256: resolved.checksums,
        checksumsFrom: resolved.checksumsFrom,
        ...(resolved.newest ? { newestRelease: resolved.newest } : {}),
        ...(runner.downloadUrl ? { downloadUrl: runner.downloadUrl } : {}),
      },
      preRunnerScript: source.inputs.preRunnerScript !== undefined,
    };
  }
  const encoded = encodeUserData(script);
  if ("tooLarge" in encoded) {
    // config.ts checked the size with same-sized checksums; only a compression ratio changed by
    // the real checksums can get here.
    const { plainBytes, gzipBytes } = encoded.tooLarge;
    throw new Error(
      `user data is ${plainBytes} bytes, ${gzipBytes} gzip-compressed; EC2 allows at most ` +
        `${USER_DATA_MAX_BYTES} (before base64)`,
    );
  }
  found = {
    ...found,
    bytes: encoded.bytes.length,
    ...(encoded.compressed ? { compressed: "gzip", scriptBytes: encoded.plainBytes } : {}),
  };
  return { script, encoded, found, warnings };
}

/** The full launch template data for a desired state, its resolved image and its user data. */
export function templateData(
  desired: LaunchTemplateDesired,
  image: Image,
  userData: EncodedUserData,
): RequestLaunchTemplateData {
  const lt = desired.launchTemplate;
  const tags = [...Object.entries(lt.tags), [OWNER_TAG, desired.table]].map(([Key, Value]) => ({
    Key,
    Value,
  }));
  const profile = lt.iamInstanceProfile;
  const root = rootVolume(desired, image);
  return {
    ImageId: image.ImageId,
    ...(profile
      ? { IamInstanceProfile: "arn" in profile ? { Arn: profile.arn } : { Name: profile.name } }
      : {}),
    SecurityGroupIds: lt.securityGroupIds,
    ...(userData.bytes.length > 0
      ? { UserData: Buffer.from(userData.bytes).toString("base64") }
      : {}),
    ...(lt.instanceType ? { InstanceType: lt.instanceType as _InstanceType } : {}),
    ...(lt.keyName ? { KeyName: lt.keyName } : {}),
    ...(root ? { BlockDeviceMappings: [root] } : {}),
    // A job that shuts its machine down leaves no stopped instance (and disk) behind.
    InstanceInitiatedShutdownBehavior: "terminate",
    MetadataOptions: metadataOptions(
      lt.instanceMetadataTags,
      lt.userData.kind === "bootstrap" && lt.userData.inputs.jobMetadata === "open",
    ),
    TagSpecifications: [
      { ResourceType: "instance", Tags: tags },
      { ResourceType: "volume", Tags: tags },
    ],
  };
}

/**
 * The root volume's mapping: always deleted with its instance (an AMI may say otherwise, and a
 * kept volume is a leak), with the desired type and size. None for instance-store images.
 */
function rootVolume(
  desired: LaunchTemplateDesired,
  image: Image,
): LaunchTemplateBlockDeviceMappingRequest | undefined {
  const { deviceName, sizeGiB, type } = desired.launchTemplate.rootVolume;
  if (image.RootDeviceType !== "ebs" || !image.RootDeviceName) {
    if (deviceName !== undefined || sizeGiB !== undefined) {
      throw new Error(
        `root-volume-size: ${image.ImageId} has no EBS root volume (root device type ${image.RootDeviceType})`,
      );
    }
    return undefined;
  }
  if (deviceName !== undefined && deviceName !== image.RootDeviceName) {
    throw new Error(
      `root-device-name: ${deviceName} is not the root device of ${image.ImageId} (${image.RootDeviceName}); omit it to use the image's`,
    );
  }
  const snapshot = image.BlockDeviceMappings?.find((m) => m.DeviceName === image.RootDeviceName)
    ?.Ebs?.VolumeSize;
  if (sizeGiB !== undefined && snapshot !== undefined && sizeGiB < snapshot) {
    throw new Error(
      `root-volume-size: ${sizeGiB} GiB is smaller than the ${snapshot} GiB root snapshot of ${image.ImageId}`,
    );
  }
  return {
    DeviceName: image.RootDeviceName,
    Ebs: {
      DeleteOnTermination: true,
      VolumeType: type as VolumeType,
      ...(sizeGiB !== undefined ? { VolumeSize: sizeGiB } : {}),
    },
  };
}

type Data = RequestLaunchTemplateData | ResponseLaunchTemplateData;

/**
 * Launch template data in a comparable form: user data as the hash of its content (decoded, and
 * uncompressed when gzip, so how it was compressed never counts), security groups and tags as
 * sets, empty values dropped. moto copies the template's own tags into its data as a
 * `launch-template` tag specification (EC2 does not); those are ignored.
 */
function canonical(data: Data): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(data)) {
    if (value === undefined || value === null) continue;
    if (key === "UserData") {
      out[key] = sha256(userDataContent(value as string));
    } else if (key === "MetadataOptions") {
      // EC2 answers with the options' rollout `State` (pending, applied), which is not desired data.
      const { State: _state, ...options } = value as NonNullable<
        ResponseLaunchTemplateData["MetadataOptions"]
      >;
      out[key] = options;
    } else if (key === "SecurityGroupIds") {
      out[key] = [...value as string[]].sort();
    } else if (key === "TagSpecifications") {
      const specs = (value as NonNullable<Data["TagSpecifications"]>)
        .filter((s) => s.ResourceType !== "launch-template")
        .map((s) => [
          s.ResourceType,
          Object.fromEntries((s.Tags ?? []).map((t) => [t.Key, t.Value])),
        ])
        .sort(([a], [b]) => String(a).localeCompare(String(b)));
      out[key] = specs;
    } else out[key] = value;
    if (Array.isArray(out[key]) && (out[key] as unknown[]).length === 0) delete out[key];
  }
  return out;
}

/**
 * What differs between desired and actual data, one entry per field; user data never shown.
 * Over the fields of both, or with `desiredKeysOnly` over the desired ones (what EC2 answers
 * besides is not looked at).
 */
export function differences(
  desired: Data,
  actual: Data,
  options: { desiredKeysOnly?: boolean } = {},
): string[] {
  const want = canonical(desired);
  const have = canonical(actual);
  const keys = options.desiredKeysOnly
    ? Object.keys(want).sort()
    : [...new Set([...Object.keys(want), ...Object.keys(have)])].sort();
  return keys.filter((k) => !isDeepStrictEqual(want[k], have[k])).map((k) => {
    const [from, to] = [have[k], want[k]];
    if (k === "UserData") return "UserData content";
    if (typeof to === "string" || typeof from === "string") {
      return `${k} ${from ?? "(none)"} -> ${to ?? "(none)"}`;
    }
    return k;
  });
}

/** Version numbers to delete: all but the newest `keep` and the default. */
export function pruneable(versions: number[], defaultVersion: number, keep: number): number[] {
  const kept = new Set([...versions].sort((a, b) => b - a).slice(0, keep));
  kept.add(defaultVersion);
  return versions.filter((v) => !kept.has(v)).sort((a, b) => a - b);
}

async function findTemplate(ec2: EC2Client, name: string): Promise<LaunchTemplate | undefined> {
  // A name filter answers a missing template with an empty list rather than an error.
  const out = await ec2.send(
    new DescribeLaunchTemplatesCommand({
      Filters: [{ Name: "launch-template-name", Values: [name] }],
    }),
  );
  return out.LaunchTemplates?.find((t) => t.LaunchTemplateName === name);
}

async function listVersions(ec2: EC2Client, id: string): Promise<LaunchTemplateVersion[]> {
  const versions: LaunchTemplateVersion[] = [];
  const pages = paginateDescribeLaunchTemplateVersions({ client: ec2, pageSize: 200 }, {
    LaunchTemplateId: id,
  });
  for await (const page of pages) versions.push(...page.LaunchTemplateVersions ?? []);
  return versions;
}

function profileOf(desired: LaunchTemplateDesired): string {
  const profile = desired.launchTemplate.iamInstanceProfile;
  if (!profile) return "";
  return "arn" in profile ? profile.arn : profile.name;
}
