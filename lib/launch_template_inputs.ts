/**
 * The launch-template task's inputs: their specs, what the task cannot run without, and the parser
 * of its section of the desired state. Only lib/launch_template.ts and lib/config.ts import this.
 *
 * @module
 */
import { EC2_MAX_TAGS, OWNER_TAG, poolRunnerLabel, PROVISION_INSTANCE_TAGS } from "./contract.ts";
import {
  checkIds,
  FILE_INPUT_MAX_BYTES,
  type InputSpec,
  type Names,
  type Reader,
  type ReadTextFile,
  type Requirements,
  SECURITY_GROUP,
  show,
} from "./inputs.ts";
import { specProblems } from "./bootstrap.ts";
import { LATEST } from "./runner_release.ts";
import {
  isEnterpriseServer,
  plannedInputs,
  registrationUrl,
  userDataSizeProblem,
  type UserDataSource,
} from "./user_data.ts";

/** The launch-template task's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "launch-template-name",
    env: ["REFRESH_LAUNCH_TEMPLATE_NAME"],
    kind: "string",
    default: "<owner>-<repo>-ci-launch-template",
    help: "name of the EC2 launch template",
  },
  { name: "ami", env: ["REFRESH_AMI"], kind: "string", help: "AMI id (ami-…) runners boot" },
  {
    name: "ami-name",
    env: ["REFRESH_AMI_NAME"],
    kind: "string",
    help: "instead of --ami: name pattern (with *), newest match by creation date",
  },
  {
    name: "ami-owners",
    env: ["REFRESH_AMI_OWNERS"],
    kind: "list",
    default: "self",
    help: "owners searched with --ami-name (account ids, self, amazon, …)",
  },
  {
    name: "iam-instance-profile",
    env: ["REFRESH_IAM_INSTANCE_PROFILE"],
    kind: "string",
    help: "IAM instance profile name or ARN for runners",
  },
  {
    name: "security-group-ids",
    env: ["REFRESH_SECURITY_GROUP_IDS"],
    kind: "list",
    help: "security groups of runners (comma or space separated)",
  },
  {
    name: "pre-runner-script",
    env: ["REFRESH_PRE_RUNNER_SCRIPT"],
    kind: "string",
    help:
      "file run on each instance before the runner starts (your setup), by the generated bootstrap",
  },
  {
    name: "runner-version",
    env: ["REFRESH_RUNNER_VERSION"],
    kind: "string",
    default: LATEST,
    help:
      "latest (actions/runner's newest release, looked up on each run) or a version like 2.334.0",
  },
  {
    name: "runner-sha256-x64",
    env: ["REFRESH_RUNNER_SHA256_X64"],
    kind: "string",
    default: "from the runner's release",
    help:
      "SHA-256 of the x64 runner package, with a pinned --runner-version (required with GitHub Enterprise Server)",
  },
  {
    name: "runner-sha256-arm64",
    env: ["REFRESH_RUNNER_SHA256_ARM64"],
    kind: "string",
    default: "from the runner's release",
    help:
      "SHA-256 of the arm64 runner package, with a pinned --runner-version (required with GitHub Enterprise Server)",
  },
  {
    name: "runner-download-url",
    env: ["REFRESH_RUNNER_DOWNLOAD_URL"],
    kind: "string",
    default: "github.com's release download",
    help: "runner package URL with {version} and {arch} (x64, arm64), for a mirror",
  },
  {
    name: "runner-group",
    env: ["REFRESH_RUNNER_GROUP"],
    kind: "string",
    help: "runner group runners join (organization-level runners only)",
  },
  {
    name: "job-user",
    env: ["REFRESH_JOB_USER"],
    kind: "string",
    default: "runner",
    help: "runner: jobs run as a dedicated user the bootstrap creates; root: as root " +
      "(needs --job-metadata open)",
  },
  {
    name: "job-sudo",
    env: ["REFRESH_JOB_SUDO"],
    kind: "string",
    default: "enabled",
    help: "enabled: passwordless sudo for jobs, as on GitHub-hosted runners (a job can then " +
      "undo the metadata block); disabled: strict mode",
  },
  {
    name: "job-metadata",
    env: ["REFRESH_JOB_METADATA"],
    kind: "string",
    default: "blocked",
    help: "blocked: jobs cannot reach instance metadata (the instance role, so the pool's token " +
      "and signals); open: jobs can use the instance role",
  },
  {
    name: "user-data",
    env: ["REFRESH_USER_DATA"],
    kind: "string",
    help: "expert mode: file that is the whole user data instead of the generated bootstrap",
  },
  {
    name: "instance-metadata-tags",
    env: ["REFRESH_INSTANCE_METADATA_TAGS"],
    kind: "string",
    default: "enabled",
    help:
      "enabled or disabled: instance tags in instance metadata (the generated bootstrap needs them)",
  },
  {
    name: "instance-type",
    env: ["REFRESH_INSTANCE_TYPE"],
    kind: "string",
    help: "default instance type in the template (provision overrides it)",
  },
  { name: "key-name", env: ["REFRESH_KEY_NAME"], kind: "string", help: "EC2 key pair name" },
  {
    name: "root-volume-size",
    env: ["REFRESH_ROOT_VOLUME_SIZE"],
    kind: "int",
    help: "root volume size in GiB",
  },
  {
    name: "root-volume-type",
    env: ["REFRESH_ROOT_VOLUME_TYPE"],
    kind: "string",
    default: "gp3",
    help: "root volume type (gp3, gp2, standard)",
  },
  {
    name: "root-device-name",
    env: ["REFRESH_ROOT_DEVICE_NAME"],
    kind: "string",
    default: "the AMI's root device",
    help: "device the root volume settings apply to",
  },
  {
    name: "tags",
    env: ["REFRESH_TAGS"],
    kind: "json",
    help: 'extra tags on instances and volumes, JSON {"Key": "value"}',
  },
  {
    name: "keep-versions",
    env: ["REFRESH_KEEP_VERSIONS"],
    kind: "int",
    default: "5",
    help: "launch template versions kept (the default version is never deleted)",
  },
];

/** What the launch-template task cannot run without. */
export const REQUIRED: Requirements = [
  "ami|ami-name",
  "iam-instance-profile",
  "security-group-ids",
  // The generated bootstrap registers runners with the repository or organization.
  "repo|org|user-data",
];

export type AmiSource = { id: string } | { namePattern: string; owners: string[] };

/** The launch-template task's section of the desired state. */
export interface DesiredLaunchTemplate {
  name: string;
  ami?: AmiSource;
  iamInstanceProfile?: { name: string } | { arn: string };
  securityGroupIds: string[];
  /** Where the user data comes from; the script is never stored or printed, only its hash. */
  userData: UserDataSource;
  /** Whether instances can read their tags from instance metadata. */
  instanceMetadataTags: boolean;
  instanceType?: string;
  keyName?: string;
  /** Settings of the root volume; the device defaults to the AMI's root device. */
  rootVolume: { deviceName?: string; sizeGiB?: number; type: string };
  tags: Record<string, string>;
  keepVersions: number;
}

/** Tag keys provision sets itself, which the template must leave to it. */
const PROVISION_TAGS: readonly string[] = PROVISION_INSTANCE_TAGS;

/** User tags that fit beside the ownership tag and provision's tags within EC2's limit. */
const MAX_USER_TAGS = EC2_MAX_TAGS - 1 - PROVISION_TAGS.length;

/**
 * A tag key instance metadata can show ("View tags for your EC2 instances using instance
 * metadata", EC2 User Guide): letters, digits and `+ - = . , _ : @`; no spaces or `/`; not only
 * `.`, `..` or `_index`. EC2 fails the launch of an instance with another key.
 */
const METADATA_TAG_KEY = /^(?!\.{1,2}$|_index$)[A-Za-z0-9+\-=.,_:@]+$/;

const AMI = /^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;
const AMI_OWNER = /^(?:\d{12}|self|amazon|aws-marketplace|aws-backup-vault)$/;

/** Reads the launch-template task's inputs, recording problems on the reader. */
export function parseLaunchTemplate(
  r: Reader,
  names: Names,
  tasks: readonly string[],
  readTextFile: ReadTextFile,
): DesiredLaunchTemplate {
  const problems = r.problems;
  const { stem } = names;
  const ltName = r.string("launch-template-name") ?? `${stem}-ci-launch-template`;
  if (!/^[a-zA-Z0-9().\-/_]{3,128}$/.test(ltName)) {
    problems.push(
      `launch-template-name: "${ltName}" must be 3-128 of letters, digits and ( ) . - / _`,
    );
  }
  let ami: AmiSource | undefined;
  const amiId = r.string("ami");
  const amiName = r.string("ami-name");
  if (amiId !== undefined && amiName !== undefined) {
    problems.push("ami: set either --ami or --ami-name, not both");
  } else if (amiId !== undefined) {
    if (!AMI.test(amiId)) {
      problems.push(`ami: "${amiId}" is not an AMI id (ami- and 8 or 17 hex digits)`);
    } else ami = { id: amiId };
  } else if (amiName !== undefined) {
    if (!/^[\w ()[\]./'@*?-]{1,128}$/.test(amiName)) {
      problems.push(
        `ami-name: "${amiName}" is not an AMI name pattern (1-128 of letters, digits, space, ( ) [ ] . / - ' @ _ and the wildcards * ?)`,
      );
    }
    const owners = checkIds(
      "ami-owners",
      r.list("ami-owners") ?? [],
      AMI_OWNER,
      "an account id (12 digits), self, amazon, aws-marketplace or aws-backup-vault",
      problems,
    );
    if (owners?.length === 0) problems.push("ami-owners: expected at least one owner");
    ami = { namePattern: amiName, owners: owners ?? [] };
  }
  if (amiName === undefined && r.has("ami-owners")) {
    problems.push("ami-owners: only used with --ami-name; remove it or set --ami-name");
  }
  let iamInstanceProfile: { name: string } | { arn: string } | undefined;
  const profile = r.string("iam-instance-profile");
  if (profile !== undefined) {
    if (profile.startsWith("arn:")) {
      if (!/^arn:aws[a-z-]*:iam::\d{12}:instance-profile\/[\w+=,.@/-]+$/.test(profile)) {
        problems.push(`iam-instance-profile: "${profile}" is not an instance profile ARN`);
      } else iamInstanceProfile = { arn: profile };
    } else if (!/^[\w+=,.@-]{1,128}$/.test(profile)) {
      problems.push(`iam-instance-profile: "${profile}" is not an instance profile name`);
    } else iamInstanceProfile = { name: profile };
  }
  const securityGroupIds = checkIds(
    "security-group-ids",
    r.list("security-group-ids"),
    SECURITY_GROUP,
    "a security group id (sg-…)",
    problems,
  );
  const { userData, instanceMetadataTags } = parseUserData(
    r,
    names,
    tasks.includes("launch-template"),
    readTextFile,
  );
  const instanceType = r.string("instance-type");
  if (instanceType !== undefined && !/^[a-z][a-z0-9-]*\.[a-z0-9]+$/.test(instanceType)) {
    problems.push(`instance-type: "${instanceType}" is not an instance type like m7i.large`);
  }
  const keyName = r.string("key-name");
  if (keyName !== undefined && !/^[\x20-\x7e]{1,255}$/.test(keyName)) {
    problems.push(`key-name: "${keyName}" is not a key pair name (1-255 ASCII characters)`);
  }
  const rootSize = r.int("root-volume-size", 1, 16384);
  const rootType = r.string("root-volume-type") ?? "gp3";
  if (!["gp3", "gp2", "standard"].includes(rootType)) {
    problems.push(
      `root-volume-type: "${rootType}" is not one of gp3, gp2, standard (io1 and io2 need provisioned IOPS, st1 and sc1 cannot boot)`,
    );
  } else if (rootType === "standard" && rootSize !== undefined && rootSize > 1024) {
    problems.push(
      `root-volume-size: ${rootSize} GiB exceeds 1024, the most a standard volume holds`,
    );
  }
  const rootDevice = r.string("root-device-name");
  if (rootDevice !== undefined && !/^\/dev\/[a-z][a-z0-9]*$/.test(rootDevice)) {
    problems.push(`root-device-name: "${rootDevice}" is not a device name like /dev/xvda`);
  }
  const tags: Record<string, string> = {};
  const tagsValue = r.json("tags");
  if (tagsValue !== undefined) {
    if (typeof tagsValue !== "object" || tagsValue === null || Array.isArray(tagsValue)) {
      problems.push(`tags: expected a JSON object {"Key": "value"}, got ${show(tagsValue)}`);
    } else {
      for (const [k, v] of Object.entries(tagsValue)) {
        if (typeof v !== "string") {
          problems.push(`tags: value of "${k}" must be a string, got ${show(v)}`);
        } else if (k.length === 0 || k.length > 128 || k.toLowerCase().startsWith("aws:")) {
          problems.push(`tags: key "${k}" must be 1-128 characters and not start with aws:`);
        } else if (v.length > 256) {
          problems.push(`tags: value of "${k}" is longer than 256 characters`);
        } else if (k === OWNER_TAG) {
          problems.push(`tags: key "${k}" is refresh's ownership tag (the table name); remove it`);
        } else if (PROVISION_TAGS.includes(k)) {
          problems.push(
            `tags: key "${k}" is set by provision on every instance it launches; remove it`,
          );
        } else if (instanceMetadataTags && !METADATA_TAG_KEY.test(k)) {
          problems.push(
            `tags: key "${k}" cannot be read from instance metadata, where EC2 allows only ` +
              "letters, digits and + - = . , _ : @ (no spaces or /, not only . or .., not _index); " +
              "rename it, or set --instance-metadata-tags disabled with your own --user-data",
          );
        } else tags[k] = v;
      }
      const count = Object.keys(tags).length;
      if (count > MAX_USER_TAGS) {
        problems.push(
          `tags: ${count} tags given; at most ${MAX_USER_TAGS} (EC2's 50 per instance, less the ` +
            `ownership tag and provision's ${PROVISION_TAGS.join(" and ")})`,
        );
      }
    }
  }
  const keepVersions = r.int("keep-versions", 1, 100);
  return {
    name: ltName,
    ami,
    iamInstanceProfile,
    securityGroupIds: securityGroupIds ?? [],
    userData,
    instanceMetadataTags,
    instanceType,
    keyName,
    rootVolume: { deviceName: rootDevice, sizeGiB: rootSize, type: rootType },
    tags,
    keepVersions: keepVersions!,
  };
}

/** Inputs only the generated bootstrap uses. */
const BOOTSTRAP_INPUTS = [
  "pre-runner-script",
  "runner-version",
  "runner-sha256-x64",
  "runner-sha256-arm64",
  "runner-download-url",
  "runner-group",
  "job-user",
  "job-sudo",
  "job-metadata",
];

/**
 * The user data: the operator's `--user-data` file (expert mode), or the generated bootstrap made
 * from the pool's own inputs (table, region, the GitHub server and scope the github-token task
 * uses: `--github-api-url`, `--repo`/`--org`) and the runner's; and whether instance tags are
 * readable from metadata. Its size is checked here, before any call, with the checksums'
 * stand-ins when they are to be looked up.
 */
function parseUserData(
  r: Reader,
  names: Names,
  selected: boolean,
  readTextFile: ReadTextFile,
): { userData: UserDataSource; instanceMetadataTags: boolean } {
  const problems = r.problems;
  const before = problems.length;
  const read = (name: string, path: string): string | undefined => {
    try {
      return readTextFile(path, FILE_INPUT_MAX_BYTES);
    } catch (error) {
      problems.push(`${name}: cannot read ${path}: ${(error as Error).message}`);
      return undefined;
    }
  };
  const userDataPath = r.string("user-data");
  let userData: UserDataSource;
  if (userDataPath !== undefined) {
    for (const name of BOOTSTRAP_INPUTS.filter((n) => r.has(n))) {
      problems.push(
        `${name}: only used by the generated bootstrap, and --user-data replaces it; remove ` +
          `${name === "pre-runner-script" ? "one of them" : `--${name}`}`,
      );
    }
    userData = { kind: "file", path: userDataPath, script: read("user-data", userDataPath) ?? "" };
  } else {
    const version = r.string("runner-version") ?? LATEST;
    if (version !== LATEST && !/^\d+\.\d+\.\d+$/.test(version)) {
      problems.push(
        `runner-version: "${version}" is neither latest nor a runner version like 2.334.0`,
      );
    }
    const x64 = checksum(r, "runner-sha256-x64");
    const arm64 = checksum(r, "runner-sha256-arm64");
    if (version === LATEST && (r.has("runner-sha256-x64") || r.has("runner-sha256-arm64"))) {
      problems.push(
        "runner-version: checksums are given, but the version is latest (the default), which " +
          "changes with each actions/runner release; set --runner-version to the version the " +
          "checksums are of, or remove --runner-sha256-x64 and --runner-sha256-arm64",
      );
    }
    if ((r.has("runner-sha256-x64")) !== (r.has("runner-sha256-arm64"))) {
      const missing = r.has("runner-sha256-x64") ? "runner-sha256-arm64" : "runner-sha256-x64";
      problems.push(
        `${missing}: required with --${
          missing.endsWith("x64") ? "runner-sha256-arm64" : "runner-sha256-x64"
        }; give the checksums of both packages, or neither to look them up in the runner's release`,
      );
    }
    const downloadUrl = r.string("runner-download-url");
    if (downloadUrl !== undefined) checkDownloadUrl(downloadUrl, problems);
    const runnerGroup = r.string("runner-group");
    if (runnerGroup !== undefined) {
      if (!/^[\x20-\x7e]{1,100}$/.test(runnerGroup)) {
        problems.push(`runner-group: "${runnerGroup}" must be 1-100 printable ASCII characters`);
      } else if (!names.org) {
        problems.push(
          "runner-group: runner groups hold organization-level runners only; set --org too, or remove it",
        );
      }
    }
    const apiUrl = (r.string("github-api-url") ?? "https://api.github.com").replace(/\/+$/, "");
    let validApi = true;
    try {
      new URL(apiUrl);
    } catch {
      validApi = false; // parseGithub reports it.
    }
    if (selected && validApi && isEnterpriseServer(apiUrl) && !r.has("runner-sha256-x64")) {
      problems.push(
        `runner-sha256-x64: required with GitHub Enterprise Server (${apiUrl}), whose API does ` +
          "not hold github.com's actions/runner releases; give --runner-version, " +
          "--runner-sha256-x64 and --runner-sha256-arm64 (from " +
          "https://github.com/actions/runner/releases), and --runner-download-url if the " +
          "instances cannot reach github.com",
      );
    }
    const scope = names.org ? { org: names.org } : names.repo ? { repo: names.repo } : undefined;
    // No scope: REQUIRED reports it when the task runs (repo|org|user-data).
    const jobUser = r.string("job-user") ?? "runner";
    if (jobUser !== "runner" && jobUser !== "root") {
      problems.push(`job-user: "${jobUser}" is not runner or root`);
    }
    const jobSudo = r.string("job-sudo") ?? "enabled";
    if (jobSudo !== "enabled" && jobSudo !== "disabled") {
      problems.push(`job-sudo: "${jobSudo}" is not enabled or disabled`);
    }
    const jobMetadata = r.string("job-metadata") ?? "blocked";
    if (jobMetadata !== "blocked" && jobMetadata !== "open") {
      problems.push(`job-metadata: "${jobMetadata}" is not blocked or open`);
    }
    if (jobUser === "root" && jobMetadata !== "open") {
      problems.push(
        "job-metadata: jobs that run as root can always reach instance metadata; with " +
          "--job-user root set --job-metadata open (and know that jobs get the instance role)",
      );
    }
    if (jobUser === "root" && jobSudo === "disabled") {
      problems.push("job-sudo: disabled (strict mode) means nothing with --job-user root");
    }
    const prePath = r.string("pre-runner-script");
    const preRunnerScript = prePath !== undefined ? read("pre-runner-script", prePath) : undefined;
    userData = {
      kind: "bootstrap",
      inputs: {
        table: names.table,
        region: names.region,
        poolLabel: poolRunnerLabel(names.region, names.table),
        ...(jobUser === "root" ? { jobUser: "root" as const } : {}),
        ...(jobSudo === "disabled" ? { jobSudo: false } : {}),
        ...(jobMetadata === "open" ? { jobMetadata: "open" as const } : {}),
        githubUrl: scope && validApi ? registrationUrl(apiUrl, scope) : "",
        ...(runnerGroup !== undefined ? { runnerGroup } : {}),
        runner: {
          version,
          ...(x64 && arm64 ? { sha256: { x64, arm64 } } : {}),
          ...(downloadUrl !== undefined ? { downloadUrl } : {}),
        },
        ...(preRunnerScript !== undefined ? { preRunnerScript } : {}),
      },
    };
  }
  const generated = userData.kind === "bootstrap";
  const tagsSetting = r.string("instance-metadata-tags") ?? "enabled";
  if (tagsSetting !== "enabled" && tagsSetting !== "disabled") {
    problems.push(`instance-metadata-tags: "${tagsSetting}" is not enabled or disabled`);
  } else if (generated && tagsSetting === "disabled") {
    problems.push(
      "instance-metadata-tags: the generated bootstrap reads its first run id from the instance " +
        "tag InitialRunId in instance metadata; remove --instance-metadata-tags disabled, or " +
        "give your own --user-data",
    );
  }
  const instanceMetadataTags = tagsSetting !== "disabled";
  // The size depends on every value above: checked when they are all good. A bootstrap that
  // cannot be made (no repository, a bad table name or region) is reported by those inputs.
  if (problems.length === before && bootstrapPossible(userData)) {
    const problem = userDataSizeProblem(userData);
    if (problem) problems.push(problem);
  }
  return { userData, instanceMetadataTags };
}

/** Whether the user data can be made: a file always; the bootstrap when its spec is good. */
function bootstrapPossible(source: UserDataSource): boolean {
  if (source.kind === "file") return true;
  const { runner, ...rest } = plannedInputs(source.inputs);
  return specProblems({ ...rest, runner: { ...runner, sha256: runner.sha256! } }).length === 0;
}

/** A SHA-256 input, lowercased; undefined (with a problem) when it is no hex digest. */
function checksum(r: Reader, name: string): string | undefined {
  const value = r.string(name);
  if (value === undefined) return undefined;
  if (!/^[0-9a-fA-F]{64}$/.test(value)) {
    r.problems.push(`${name}: "${value}" is not a SHA-256 checksum (64 hex digits)`);
    return undefined;
  }
  return value.toLowerCase();
}

/**
 * Checks a runner download URL template: http(s), `{arch}` in it (the packages differ), no other
 * placeholder than `{version}` and `{arch}`, nothing a shell would read as syntax.
 */
function checkDownloadUrl(template: string, problems: string[]): void {
  const name = "runner-download-url";
  const sample = template.replaceAll("{version}", "2.334.0").replaceAll("{arch}", "x64");
  let url: URL | undefined;
  try {
    url = new URL(sample);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    problems.push(`${name}: "${template}" is not an http(s) URL`);
  } else if (!template.includes("{arch}")) {
    problems.push(
      `${name}: "${template}" has no {arch}; the x64 and arm64 packages are different files`,
    );
  } else if (/[{}]/.test(sample)) {
    problems.push(`${name}: "${template}" has a placeholder other than {version} and {arch}`);
  } else if (/[\s'"`$\\;&|<>()]/.test(sample)) {
    problems.push(
      `${name}: "${template}" has a space, quote or shell character; percent-encode it`,
    );
  }
}
