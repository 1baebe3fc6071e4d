/**
 * The desired state: flags, environment and an optional JSON config file become one validated
 * {@link DesiredState}. Flags win over the environment, which wins over the file, which wins over
 * the ambient environment (the variables GitHub Actions and the AWS credentials action set in
 * every job: GITHUB_REPOSITORY, GITHUB_API_URL, AWS_REGION, AWS_DEFAULT_REGION), so a config file
 * naming another repository's pool manages that pool.
 *
 * This module holds what every task shares: the sources and their precedence ({@link collect}),
 * the inputs every task uses (config, region, repository/organization, table, `--only`,
 * `--dry-run`, `--json`) and the names derived from them ({@link Names}), and the composition of
 * the tasks' sections into one desired state. Each task declares its own inputs (`INPUTS`), what
 * it cannot run without (`REQUIRED`) and the parser of its section, in its own module; the
 * machinery they share is lib/inputs.ts.
 *
 * Nothing here touches the network: every problem in the input is collected and thrown at once as
 * a {@link ConfigError}, before any client is built. Secrets come from the environment only.
 *
 * @module
 */
import { parseArgs } from "node:util";
import * as github from "./github_token.ts";
import {
  ConfigError,
  duplicateKeys,
  FILE_INPUT_MAX_BYTES,
  type InputSpec,
  type Names,
  parseJson,
  type Raw,
  Reader,
  type ReadTextFile,
  type Requirements,
} from "./inputs.ts";
import * as launchTemplate from "./launch_template_inputs.ts";
import * as parameters from "./parameters.ts";
import * as reaper from "./reaper/inputs.ts";
import * as pools from "./resource_pools.ts";
import * as warmPool from "./warm_pool.ts";
import * as operations from "./operations/inputs.ts";
import { type SharedDesired, type TaskName, TASKS } from "./task.ts";

export { ConfigError, type InputSpec, type Names, type TaskName, TASKS };

/**
 * Minutes after which no task starts (well under the 15 min `timeout-minutes` of
 * .github/workflows/refresh.yml, so a run reports what it skipped before the job is killed).
 */
export const DEADLINE_MIN = 10;

/** Seconds each attempt of a request may take (AWS and GitHub). */
export const REQUEST_TIMEOUT_SEC = 20;

/** The inputs every task shares. */
const SHARED_INPUTS: InputSpec[] = [
  { name: "config", kind: "string", help: "JSON file of inputs, keyed by flag name" },
  {
    name: "region",
    env: ["AWS_REGION", "AWS_DEFAULT_REGION"],
    ambient: true,
    kind: "string",
    help: "AWS region of the pool",
  },
  {
    name: "repo",
    env: ["GITHUB_REPOSITORY"],
    ambient: true,
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
  {
    name: "deadline-min",
    env: ["REFRESH_DEADLINE_MIN"],
    kind: "int",
    default: String(DEADLINE_MIN),
    help: "minutes after which no task starts; the rest are reported as skipped (exit 1)",
  },
  {
    name: "request-timeout-sec",
    env: ["REFRESH_REQUEST_TIMEOUT_SEC"],
    kind: "int",
    default: String(REQUEST_TIMEOUT_SEC),
    help: "seconds each attempt of an AWS or GitHub request may take before it is retried",
  },
];

/**
 * Every input refresh reads: the shared ones, then each task's. `--help` and the README's input
 * table are built from this list.
 */
export const INPUTS: InputSpec[] = [
  ...SHARED_INPUTS,
  ...parameters.INPUTS,
  ...launchTemplate.INPUTS,
  ...pools.INPUTS,
  ...github.INPUTS,
  ...reaper.INPUTS,
  ...warmPool.INPUTS,
  ...operations.INPUTS,
];

/** Which inputs each task cannot run without, declared by the task. */
const REQUIRED: Partial<Record<TaskName, Requirements>> = {
  "parameters": parameters.REQUIRED,
  "launch-template": launchTemplate.REQUIRED,
  "github-token": github.REQUIRED,
};

/** The whole desired state: the shared inputs and each task's section. */
export interface DesiredState extends SharedDesired {
  parameters: parameters.DesiredParameters;
  launchTemplate: launchTemplate.DesiredLaunchTemplate;
  pools: pools.DesiredPools;
  github: github.DesiredGithub;
  reaper: reaper.DesiredReaper;
  warmPool: warmPool.DesiredWarmPool;
  operations: operations.DesiredOperations;
}

/** What the parser reads; the entry passes the real ones, tests pass their own. */
export interface ConfigSources {
  args: string[];
  env: Record<string, string | undefined>;
  /** Reads a file input, never more than its limit (see {@link ReadTextFile}). */
  readTextFile: ReadTextFile;
}

/** The help text: every input with its environment variable and default. */
export function helpText(): string {
  const lines = [
    "refresh: reconcile a pool of self-hosted GitHub Actions runners on EC2",
    "",
    "usage: deno run --allow-net --allow-env --allow-read --allow-sys=osRelease,homedir refresh.ts [options]",
    "",
    "options (config-file key = flag name; flags win over environment, environment over file,",
    `  file over the ambient ${AMBIENT_ENV.join(", ")}):`,
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

/** Environment variables the platform sets in every job, which a config file overrides. */
const AMBIENT_ENV = INPUTS.filter((i) => i.ambient).flatMap((i) => i.env ?? []);

/**
 * Collects raw values, later sources winning: the ambient environment, the config file, the rest
 * of the environment, then flags.
 */
function collect(sources: ConfigSources, problems: string[]): { raw: Raw; help: boolean } {
  const options: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" } };
  for (const input of INPUTS) {
    if (input.secret) continue;
    options[input.name] = { type: input.kind === "bool" ? "boolean" : "string" };
  }
  const args = negativeValuesJoined(sources.args, options);
  let values: Record<string, unknown> = {};
  try {
    const parsed = parseArgs({
      args,
      options,
      strict: true,
      allowPositionals: false,
    });
    values = parsed.values;
  } catch (error) {
    problems.push(`flags: ${(error as Error).message}`);
    // Keep reading the well-formed flags, so every other problem is listed too.
    const loose = parseArgs({ args, options, strict: false, allowPositionals: true });
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
  const fromEnv = (ambient: boolean) => {
    for (const input of INPUTS) {
      if ((input.ambient ?? false) !== ambient) continue;
      for (const name of input.env ?? []) {
        const value = sources.env[name];
        if (value !== undefined && value !== "") {
          raw[input.name] = value;
          break;
        }
      }
    }
  };
  fromEnv(true);
  const configPath = (values.config as string | undefined) ?? undefined;
  if (configPath !== undefined) {
    try {
      const text = sources.readTextFile(configPath, FILE_INPUT_MAX_BYTES);
      const file = parseJson(text);
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
  fromEnv(false);
  for (const input of INPUTS) {
    if (!input.secret && values[input.name] !== undefined) raw[input.name] = values[input.name];
  }
  return { raw, help: values.help === true };
}

/**
 * `--name -5` as `--name=-5`, for a flag that takes a value: parseArgs would otherwise take `-5`
 * for an option ("argument is ambiguous") instead of a value for the range check to report.
 */
function negativeValuesJoined(
  args: string[],
  options: Record<string, { type: "string" | "boolean" }>,
): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = /^--([^=]+)$/.exec(args[i])?.[1];
    const next = args[i + 1];
    if (name && options[name]?.type === "string" && next !== undefined && /^-\d/.test(next)) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else out.push(args[i]);
  }
  return out;
}

/**
 * Reads and validates the desired state. Throws {@link ConfigError} listing every problem, or
 * returns `"help"` when `--help` was asked for.
 */
export function parseDesiredState(sources: ConfigSources): DesiredState | "help" {
  const problems: string[] = [];
  const { raw, help } = collect(sources, problems);
  if (help) return "help";
  const r = new Reader(raw, problems, INPUTS);
  // Each section reads its inputs and records problems on the reader. Values it returns are used
  // only when no problem was found, so a missing one is never read.
  const tasks = parseTasks(r);
  const names = parseNames(r);
  const poolsSection = pools.parsePools(r, names);
  const desired: DesiredState = {
    region: names.region,
    prefix: names.stem,
    table: names.table,
    tasks,
    dryRun: r.bool("dry-run"),
    json: r.bool("json"),
    deadlineMin: r.int("deadline-min", 1, 24 * 60)!,
    requestTimeoutSec: r.int("request-timeout-sec", 1, 300)!,
    parameters: parameters.parseParameters(r),
    launchTemplate: launchTemplate.parseLaunchTemplate(r, names, tasks, sources.readTextFile),
    pools: poolsSection,
    github: github.parseGithub(r, names),
    reaper: reaper.parseReaper(r),
    warmPool: warmPool.parseWarmPool(r, poolsSection.classes),
    operations: operations.parseOperations(r),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return desired;
}

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

/** Region, repository or organization, and the table name derived from them. */
function parseNames(r: Reader): Names {
  const problems = r.problems;
  const region = r.string("region");
  if (region === undefined && !r.has("region")) {
    problems.push("region: required; set --region or AWS_REGION");
  } else if (region !== undefined && !/^[a-z]{2,4}(-[a-z]+)+-\d+$/.test(region)) {
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

function describe(name: string): string {
  const input = INPUTS.find((i) => i.name === name)!;
  if (input.secret) return input.env![0];
  return `--${name}${input.env ? ` or ${input.env[0]}` : ""}`;
}
