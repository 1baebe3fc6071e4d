/**
 * The desired-state parser: flags, environment and an optional JSON config file become one
 * validated {@link DesiredState}. Flags win over the environment, which wins over the file.
 *
 * Nothing here touches the network: every problem in the input is collected and thrown at once as
 * a {@link ConfigError}, before any client is built. Secrets come from the environment only.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { OWNER_TAG, queueName } from "./contract.ts";

/** The tasks refresh runs, in the order it runs them. */
export const TASKS = [
  "table",
  "launch-template",
  "resource-pools",
  "parameters",
  "github-token",
  "reaper",
] as const;
export type TaskName = typeof TASKS[number];

/** Thrown when the desired state is invalid; the entry exits 2 on it. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid desired state:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

type Kind = "string" | "int" | "list" | "json" | "bool";

/** One input: its flag (also its config-file key), environment variable, kind and default. */
export interface InputSpec {
  name: string;
  env?: string[];
  kind: Kind;
  default?: string;
  help: string;
  /** Read from the environment only (never a flag or a config file), and never printed. */
  secret?: boolean;
}

/** Every input refresh reads. `--help` and the README's input table are built from this list. */
export const INPUTS: InputSpec[] = [
  { name: "config", kind: "string", help: "JSON file of inputs, keyed by flag name" },
  {
    name: "region",
    env: ["AWS_REGION", "AWS_DEFAULT_REGION"],
    kind: "string",
    help: "AWS region of the pool",
  },
  {
    name: "repo",
    env: ["GITHUB_REPOSITORY"],
    kind: "string",
    help: "owner/name of the repository the pool serves; names default from it",
  },
  {
    name: "org",
    env: ["REFRESH_ORG"],
    kind: "string",
    help: "register runners at organization level (names default to <org>-… when no --repo)",
  },
  {
    name: "table",
    env: ["REFRESH_TABLE"],
    kind: "string",
    default: "<owner>-<repo>-ci-table",
    help: "DynamoDB table holding the pool's state",
  },
  {
    name: "only",
    env: ["REFRESH_ONLY"],
    kind: "list",
    default: TASKS.join(","),
    help: `run only these tasks (${TASKS.join(", ")})`,
  },
  {
    name: "dry-run",
    env: ["REFRESH_DRY_RUN"],
    kind: "bool",
    default: "false",
    help: "compute every change, write nothing",
  },
  { name: "json", kind: "bool", default: "false", help: "print the results as one JSON document" },
  // Operational parameters.
  {
    name: "idle-time-sec",
    env: ["REFRESH_IDLE_TIME_SEC"],
    kind: "int",
    default: "300",
    help: "seconds an idle instance may wait in the pool",
  },
  {
    name: "max-runtime-min",
    env: ["REFRESH_MAX_RUNTIME_MIN"],
    kind: "int",
    default: "30",
    help: "minutes a running instance may live",
  },
  {
    name: "subnet-ids",
    env: ["REFRESH_SUBNET_IDS"],
    kind: "list",
    help: "subnets instances launch in (comma or space separated)",
  },
  // Launch template.
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
    name: "user-data",
    env: ["REFRESH_USER_DATA"],
    kind: "string",
    help: "file whose content is the instances' user data (at most 16 KB)",
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
  // Resource pools.
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
  // GitHub.
  {
    name: "github-api-url",
    env: ["GITHUB_API_URL"],
    kind: "string",
    default: "https://api.github.com",
    help: "GitHub REST API base URL (GitHub Enterprise Server: https://HOST/api/v3)",
  },
  {
    name: "token-margin-min",
    env: ["REFRESH_TOKEN_MARGIN_MIN"],
    kind: "int",
    default: "30",
    help: "fetch a new registration token when the stored one expires within this many minutes",
  },
  {
    name: "github-app-id",
    env: ["GITHUB_APP_ID"],
    kind: "string",
    help: "GitHub App id (App auth; with GITHUB_APP_PRIVATE_KEY)",
  },
  {
    name: "github-app-installation-id",
    env: ["GITHUB_APP_INSTALLATION_ID"],
    kind: "string",
    help: "installation id of the App (found from the repository/organization when omitted)",
  },
  {
    name: "github-token",
    env: ["GITHUB_TOKEN"],
    kind: "string",
    secret: true,
    help: "personal access token (environment only)",
  },
  {
    name: "github-app-private-key",
    env: ["GITHUB_APP_PRIVATE_KEY"],
    kind: "string",
    secret: true,
    help: "PEM private key of the GitHub App (environment only)",
  },
  // Reaper.
  {
    name: "orphan-grace-min",
    env: ["REFRESH_ORPHAN_GRACE_MIN"],
    kind: "int",
    default: "15",
    help: "minutes a tagged instance without a live record may exist before it is terminated",
  },
  {
    name: "reap-concurrency",
    env: ["REFRESH_REAP_CONCURRENCY"],
    kind: "int",
    default: "16",
    help: "conditional updates in flight at once while locking expired instances",
  },
  {
    name: "terminated-retention-hours",
    env: ["REFRESH_TERMINATED_RETENTION_HOURS"],
    kind: "int",
    default: "24",
    help: "hours a terminated instance record is kept (DynamoDB TTL) before it expires",
  },
];

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

export interface ResourceClass {
  cpu: number;
  mmem: number;
}

export type AmiSource = { id: string } | { namePattern: string; owners: string[] };
export type GithubAuth =
  | { kind: "token"; token: string }
  | { kind: "app"; appId: string; privateKey: string; installationId?: string }
  | { kind: "none" };

export interface DesiredState {
  region: string;
  /** `owner-repo` (or the organization): the stem of every default resource name. */
  prefix: string;
  table: string;
  tasks: TaskName[];
  dryRun: boolean;
  json: boolean;
  parameters: {
    idleTimeSec: number;
    maxRuntimeMin: number;
    subnetIds: string[];
  };
  launchTemplate: {
    name: string;
    ami?: AmiSource;
    iamInstanceProfile?: { name: string } | { arn: string };
    securityGroupIds: string[];
    /** The user data script itself; only its hash is ever stored or printed. */
    userData: string;
    instanceType?: string;
    keyName?: string;
    /** Settings of the root volume; the device defaults to the AMI's root device. */
    rootVolume: { deviceName?: string; sizeGiB?: number; type: string };
    tags: Record<string, string>;
    keepVersions: number;
  };
  pools: {
    classes: Record<string, ResourceClass>;
    queueNames: Record<string, string>;
    visibilityTimeoutSec: number;
    retentionSec: number;
    prune: boolean;
  };
  github: {
    apiUrl: string;
    scope?: { repo: { owner: string; name: string } } | { org: string };
    auth: GithubAuth;
    marginMin: number;
  };
  reaper: {
    orphanGraceMin: number;
    concurrency: number;
    terminatedRetentionHours: number;
  };
}

/** The 16 KB limit EC2 puts on base64-encoded user data, checked before any call. */
export const USER_DATA_MAX_BASE64 = 16 * 1024;

/** What the parser reads; the entry passes the real ones, tests pass their own. */
export interface ConfigSources {
  args: string[];
  env: Record<string, string | undefined>;
  readTextFile: (path: string) => string;
}

/** The help text: every input with its environment variable and default. */
export function helpText(): string {
  const lines = [
    "refresh: reconcile a pool of self-hosted GitHub Actions runners on EC2",
    "",
    "usage: deno run --allow-net --allow-env --allow-read --allow-sys=osRelease,homedir refresh.ts [options]",
    "",
    "options (config-file key = flag name; flags win over environment, environment over file):",
  ];
  for (const input of INPUTS) {
    const flag = input.secret ? `(env) ${input.env![0]}` : `--${input.name}`;
    const extra = [
      !input.secret && input.env ? `env ${input.env.join(" or ")}` : "",
      input.default !== undefined ? `default ${input.default}` : "",
    ].filter(Boolean).join("; ");
    lines.push(`  ${flag.padEnd(30)} ${input.help}${extra ? ` [${extra}]` : ""}`);
  }
  lines.push("  --help".padEnd(32) + " print this help");
  lines.push("", "exit codes: 0 ok, 1 a task failed, 2 invalid desired state");
  return lines.join("\n");
}

type Raw = Record<string, unknown>;

/** Collects raw values: config file, then environment, then flags (later wins). */
function collect(sources: ConfigSources, problems: string[]): { raw: Raw; help: boolean } {
  const options: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" } };
  for (const input of INPUTS) {
    if (input.secret) continue;
    options[input.name] = { type: input.kind === "bool" ? "boolean" : "string" };
  }
  let values: Record<string, unknown> = {};
  try {
    const parsed = parseArgs({
      args: sources.args,
      options,
      strict: true,
      allowPositionals: false,
    });
    values = parsed.values;
  } catch (error) {
    problems.push(`flags: ${(error as Error).message}`);
    // Keep reading the well-formed flags, so every other problem is listed too.
    const loose = parseArgs({ args: sources.args, options, strict: false, allowPositionals: true });
    for (const [name, value] of Object.entries(loose.values)) {
      const type = options[name]?.type;
      if (
        (type === "string" && typeof value === "string") || (type === "boolean" && value === true)
      ) {
        values[name] = value;
      }
    }
  }
  const raw: Raw = {};
  const configPath = (values.config as string | undefined) ?? undefined;
  if (configPath !== undefined) {
    try {
      const text = sources.readTextFile(configPath);
      const file = JSON.parse(text);
      for (const key of duplicateKeys(text)) {
        problems.push(`config: key "${key}" appears more than once in ${configPath}`);
      }
      if (typeof file !== "object" || file === null || Array.isArray(file)) {
        problems.push(`config: ${configPath} must hold a JSON object keyed by flag name`);
      } else {
        for (const [key, value] of Object.entries(file)) {
          const input = INPUTS.find((i) => i.name === key);
          if (!input || input.name === "config") {
            problems.push(`config: unknown key "${key}" in ${configPath}`);
          } else if (input.secret) {
            problems.push(
              `config: "${key}" is a secret and is read from ${input.env![0]} only, not a file`,
            );
          } else raw[key] = value;
        }
      }
    } catch (error) {
      problems.push(`config: cannot read ${configPath}: ${(error as Error).message}`);
    }
  }
  for (const input of INPUTS) {
    for (const name of input.env ?? []) {
      const value = sources.env[name];
      if (value !== undefined && value !== "") {
        raw[input.name] = value;
        break;
      }
    }
  }
  for (const input of INPUTS) {
    if (!input.secret && values[input.name] !== undefined) raw[input.name] = values[input.name];
  }
  return { raw, help: values.help === true };
}

class Reader {
  constructor(readonly raw: Raw, readonly problems: string[]) {}

  has(name: string): boolean {
    return this.raw[name] !== undefined;
  }

  string(name: string): string | undefined {
    const value = this.raw[name];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || value.trim() === "") {
      this.problems.push(`${name}: expected a non-empty string, got ${show(value)}`);
      return undefined;
    }
    return value.trim();
  }

  int(name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const value = this.raw[name] ?? INPUTS.find((i) => i.name === name)?.default;
    if (value === undefined) return undefined;
    const n = typeof value === "number"
      ? value
      : /^\s*-?\d+\s*$/.test(String(value))
      ? Number(value)
      : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `${min}-${max}`;
      this.problems.push(`${name}: expected a whole number ${range}, got ${show(value)}`);
      return undefined;
    }
    return n;
  }

  bool(name: string): boolean {
    const value = this.raw[name];
    if (value === undefined || value === true || value === false) return value === true;
    const text = String(value).toLowerCase();
    if (["true", "1", "yes"].includes(text)) return true;
    if (["false", "0", "no", ""].includes(text)) return false;
    this.problems.push(`${name}: expected true or false, got ${show(value)}`);
    return false;
  }

  list(name: string): string[] | undefined {
    const value = this.raw[name] ?? INPUTS.find((i) => i.name === name)?.default;
    if (value === undefined) return undefined;
    if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
      return value.map((v) => v.trim()).filter(Boolean);
    }
    if (typeof value === "string") return value.split(/[\s,]+/).filter(Boolean);
    this.problems.push(`${name}: expected a list of strings, got ${show(value)}`);
    return undefined;
  }

  json(name: string): unknown {
    const value = this.raw[name];
    if (typeof value !== "string") return value;
    try {
      return JSON.parse(value);
    } catch (error) {
      this.problems.push(`${name}: malformed JSON (${(error as Error).message})`);
      return undefined;
    }
  }
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Checks items of a list against a pattern, reporting each bad one.
 * Returns the list when every item matched.
 */
function checkIds(
  name: string,
  ids: string[] | undefined,
  pattern: RegExp,
  expected: string,
  problems: string[],
): string[] | undefined {
  if (ids === undefined) return undefined;
  const bad = ids.filter((id) => !pattern.test(id));
  for (const id of bad) problems.push(`${name}: "${id}" is not ${expected}`);
  const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
  for (const id of new Set(dupes)) problems.push(`${name}: "${id}" is listed twice`);
  return bad.length || dupes.length ? undefined : ids;
}

const SUBNET = /^subnet-[0-9a-f]{8,17}$/;
const SECURITY_GROUP = /^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;
const AMI = /^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;
const AMI_OWNER = /^(?:\d{12}|self|amazon|aws-marketplace|aws-backup-vault)$/;
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

/**
 * Paths (`a.b`) of keys given more than once in one object of a JSON text that JSON.parse
 * accepted, which it silently resolved to the last one.
 */
export function duplicateKeys(text: string): string[] {
  const found = new Set<string>();
  const stack: { keys?: Set<string>; path: string; key: string }[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (end < text.length && text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const top = stack.at(-1);
      if (expectKey && top?.keys) {
        const key: string = JSON.parse(text.slice(i, end + 1));
        top.key = top.path ? `${top.path}.${key}` : key;
        if (top.keys.has(key)) found.add(top.key);
        top.keys.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === "{" || c === "[") {
      const parent = stack.at(-1);
      const path = parent ? (parent.keys ? parent.key : parent.path) : "";
      stack.push({ keys: c === "{" ? new Set() : undefined, path, key: "" });
      expectKey = c === "{";
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === ",") {
      expectKey = stack.at(-1)?.keys !== undefined;
    }
  }
  return [...found];
}

/** Which inputs each task cannot run without. */
const REQUIRED: Partial<Record<TaskName, string[]>> = {
  "parameters": ["subnet-ids"],
  "launch-template": ["ami|ami-name", "iam-instance-profile", "security-group-ids"],
  "github-token": ["repo|org", "github-token|github-app-id"],
};

/**
 * Reads and validates the desired state. Throws {@link ConfigError} listing every problem, or
 * returns `"help"` when `--help` was asked for.
 */
export function parseDesiredState(sources: ConfigSources): DesiredState | "help" {
  const problems: string[] = [];
  const { raw, help } = collect(sources, problems);
  if (help) return "help";
  const r = new Reader(raw, problems);
  const tasks = parseTasks(r);
  const names = parseNames(r);
  const desired: DesiredState = {
    region: names.region,
    prefix: names.stem,
    table: names.table,
    tasks,
    dryRun: r.bool("dry-run"),
    json: r.bool("json"),
    parameters: parseParameters(r),
    launchTemplate: parseLaunchTemplate(r, names.stem, sources.readTextFile),
    pools: parsePools(r, names.stem),
    github: parseGithub(r, names),
    reaper: {
      orphanGraceMin: r.int("orphan-grace-min", 1)!,
      concurrency: r.int("reap-concurrency", 1, 256)!,
      terminatedRetentionHours: r.int("terminated-retention-hours", 1, 24 * 365)!,
    },
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return desired;
}

// Each section below reads its inputs and records problems on the reader. Values it returns are
// used only when no problem was found, so a missing one is never read.

/** `--only`, in run order, and the inputs the selected tasks cannot run without. */
function parseTasks(r: Reader): TaskName[] {
  const problems = r.problems;

  const tasks = (r.list("only") ?? []) as TaskName[];
  for (const t of tasks) {
    if (!TASKS.includes(t)) {
      problems.push(`only: unknown task "${t}", expected one of ${TASKS.join(", ")}`);
    }
  }
  if (tasks.length === 0) problems.push(`only: expected at least one task of ${TASKS.join(", ")}`);

  for (const [task, needs] of Object.entries(REQUIRED)) {
    if (!tasks.includes(task as TaskName)) continue;
    for (const need of needs) {
      const alternatives = need.split("|");
      if (!alternatives.some((a) => r.has(a))) {
        const label = alternatives.map((a) => describe(a)).join(" or ");
        problems.push(`${alternatives[0]}: required by task ${task}; set ${label}`);
      }
    }
  }
  return TASKS.filter((t) => tasks.includes(t));
}

interface Names {
  region: string;
  repo?: { owner: string; name: string };
  org?: string;
  table: string;
  /** The stem of every default resource name: `owner-repo`, or the organization. */
  stem: string;
}

/** Region, repository or organization, and the table name derived from them. */
function parseNames(r: Reader): Names {
  const problems = r.problems;
  const region = r.string("region");
  if (region === undefined && !r.has("region")) {
    problems.push("region: required; set --region or AWS_REGION");
  } else if (region !== undefined && !/^[a-z]{2}(-[a-z]+)+-\d+$/.test(region)) {
    problems.push(`region: "${region}" is not an AWS region name like us-east-1`);
  }

  let repo: { owner: string; name: string } | undefined;
  const repoText = r.string("repo");
  if (repoText !== undefined) {
    const m = /^([A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))\/([A-Za-z0-9._-]{1,100})$/.exec(repoText);
    if (!m) problems.push(`repo: "${repoText}" is not owner/name`);
    else repo = { owner: m[1], name: m[2] };
  }
  const org = r.string("org");
  if (org !== undefined && !/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$/.test(org)) {
    problems.push(`org: "${org}" is not a GitHub organization name`);
  }
  const prefix = repo ? `${repo.owner}-${repo.name}` : org;
  const table = r.string("table") ?? (prefix ? `${prefix}-ci-table` : undefined);
  if (table === undefined) {
    if (!r.has("table")) problems.push("table: required; set --table, or --repo to derive it");
  } else if (!/^[A-Za-z0-9_.-]{3,255}$/.test(table)) {
    problems.push(`table: "${table}" is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)`);
  }
  const stem = prefix ?? table?.replace(/-ci-table$/, "") ?? "refresh";
  return { region: region!, repo, org, table: table!, stem };
}

function parseParameters(r: Reader): DesiredState["parameters"] {
  const problems = r.problems;
  const idleTimeSec = r.int("idle-time-sec", 1);
  const maxRuntimeMin = r.int("max-runtime-min", 1);
  const subnetIds = checkIds(
    "subnet-ids",
    r.list("subnet-ids"),
    SUBNET,
    "a subnet id (subnet-…)",
    problems,
  );
  return {
    idleTimeSec: idleTimeSec!,
    maxRuntimeMin: maxRuntimeMin!,
    subnetIds: subnetIds ?? [],
  };
}

function parseLaunchTemplate(
  r: Reader,
  stem: string,
  readTextFile: ConfigSources["readTextFile"],
): DesiredState["launchTemplate"] {
  const problems = r.problems;
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
  let userData = "";
  const userDataPath = r.string("user-data");
  if (userDataPath !== undefined) {
    try {
      userData = readTextFile(userDataPath);
      const size = base64Length(userData);
      if (size > USER_DATA_MAX_BASE64) {
        problems.push(
          `user-data: ${userDataPath} is ${size} bytes base64-encoded; EC2 allows at most ${USER_DATA_MAX_BASE64}`,
        );
      }
    } catch (error) {
      problems.push(`user-data: cannot read ${userDataPath}: ${(error as Error).message}`);
    }
  }
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
        } else tags[k] = v;
      }
      const count = Object.keys(tags).length;
      if (count > 49) {
        problems.push(`tags: ${count} tags given; at most 49 (EC2's 50 less the ownership tag)`);
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
    instanceType,
    keyName,
    rootVolume: { deviceName: rootDevice, sizeGiB: rootSize, type: rootType },
    tags,
    keepVersions: keepVersions!,
  };
}

function parsePools(r: Reader, stem: string): DesiredState["pools"] {
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

function parseGithub(r: Reader, { repo, org }: Names): DesiredState["github"] {
  const problems = r.problems;
  const apiUrl = (r.string("github-api-url") ?? "https://api.github.com").replace(/\/+$/, "");
  try {
    const u = new URL(apiUrl);
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error("not http(s)");
  } catch {
    problems.push(`github-api-url: "${apiUrl}" is not an http(s) URL`);
  }
  const marginMin = r.int("token-margin-min", 0, 59);
  const token = r.raw["github-token"] as string | undefined;
  const appId = r.string("github-app-id");
  const installationId = r.string("github-app-installation-id");
  const privateKey = r.raw["github-app-private-key"] as string | undefined;
  let auth: GithubAuth = { kind: "none" };
  if (appId !== undefined) {
    if (!/^\d+$/.test(appId)) problems.push(`github-app-id: "${appId}" is not a numeric App id`);
    if (installationId !== undefined && !/^\d+$/.test(installationId)) {
      problems.push(`github-app-installation-id: "${installationId}" is not a numeric id`);
    }
    if (privateKey === undefined) {
      problems.push(
        "github-app-private-key: required with github-app-id; set GITHUB_APP_PRIVATE_KEY",
      );
    } else if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(privateKey)) {
      problems.push("github-app-private-key: GITHUB_APP_PRIVATE_KEY is not a PEM private key");
    }
    auth = { kind: "app", appId, privateKey: privateKey ?? "", installationId };
  } else if (privateKey !== undefined || installationId !== undefined) {
    // Without it the App settings would be ignored, silently, maybe for a PAT also set.
    const given = privateKey !== undefined
      ? "GITHUB_APP_PRIVATE_KEY"
      : "github-app-installation-id";
    problems.push(`github-app-id: required with ${given}; set --github-app-id or GITHUB_APP_ID`);
  } else if (token !== undefined) {
    auth = { kind: "token", token };
  }
  return {
    apiUrl,
    // --org registers at organization level; names still come from the repository when given.
    scope: org ? { org } : repo ? { repo } : undefined,
    auth,
    marginMin: marginMin!,
  };
}

function describe(name: string): string {
  const input = INPUTS.find((i) => i.name === name)!;
  if (input.secret) return input.env![0];
  return `--${name}${input.env ? ` or ${input.env[0]}` : ""}`;
}

function base64Length(text: string): number {
  return Math.ceil(new TextEncoder().encode(text).length / 3) * 4;
}
