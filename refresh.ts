#!/usr/bin/env -S deno run --allow-net --allow-env --allow-read --allow-sys=osRelease,homedir
/**
 * refresh: reconciles a pool of self-hosted GitHub Actions runners on EC2 with its desired state.
 *
 * The entry only wires things together: flags, environment and config file become the desired
 * state; the real clients are built; the tasks in `lib/` run; the report is printed; the exit
 * code is 0 (ok), 1 (a task failed) or 2 (invalid desired state, nothing was called).
 *
 *     deno run --allow-net --allow-env --allow-read --allow-sys=osRelease,homedir refresh.ts --help
 *
 * @module
 */
import { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import { SQSClient } from "npm:@aws-sdk/client-sqs@3.1169.0";
import { DynamoDBClient } from "npm:@aws-sdk/client-dynamodb@3.1164.0";
import { DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import { Octokit } from "npm:@octokit/rest@22.0.1";
import { retry } from "npm:@octokit/plugin-retry@8.1.1";
import { throttling } from "npm:@octokit/plugin-throttling@11.0.5";
import * as actions from "./lib/actions.ts";
import { CallCounter, countAwsCalls, countGithubCalls } from "./lib/calls.ts";
import {
  ConfigError,
  type DesiredState,
  helpText,
  parseDesiredState,
  type TaskName,
} from "./lib/config.ts";
import {
  githubClientOptions,
  type GithubRequestLimits,
  reconcileGithubToken,
} from "./lib/github_token.ts";
import { reconcileLaunchTemplate } from "./lib/launch_template.ts";
import { reconcileParameters } from "./lib/parameters.ts";
import { reconcileResourcePools } from "./lib/resource_pools.ts";
import { reapInstances } from "./lib/reaper.ts";
import { readBounded, type ReadTextFile } from "./lib/inputs.ts";
import { Redactor } from "./lib/redact.ts";
import {
  AWS_MAX_ATTEMPTS,
  awsRequestHandler,
  EndpointBreaker,
  explainAwsTimeouts,
  githubBreakerPlugin,
  tripOnGithubTimeouts,
} from "./lib/requests.ts";
import { exitCodeOf, renderJson, renderText, type RunReport } from "./lib/report.ts";
import { reconcileTable } from "./lib/table.ts";
import { reconcileWarmPool } from "./lib/warm_pool.ts";
import {
  type Clients,
  describeError,
  type Logger,
  runBudget,
  runTasks,
  type Task,
} from "./lib/task.ts";

/** The implementation of each task, in the order of {@link TASKS}. */
export const IMPLEMENTATIONS: Record<TaskName, Task<DesiredState>> = {
  "table": reconcileTable,
  "launch-template": reconcileLaunchTemplate,
  "resource-pools": reconcileResourcePools,
  "parameters": reconcileParameters,
  "github-token": reconcileGithubToken,
  "reaper": reapInstances,
  // After the reaper: it counts what the reaper left (drained, expired) before launching.
  "warm-pool": reconcileWarmPool,
};

/** Where the entry reads and writes; tests pass their own. */
export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Reads a file input, at most `maxBytes + 1` bytes of it. */
  readTextFile: ReadTextFile;
  /** The monotonic clock the run's deadline counts on (milliseconds; default performance.now). */
  monotonic?: () => number;
}

const realIo: Io = {
  stdout: (text) => console.log(text),
  stderr: (text) => console.error(text),
  readTextFile: (path, maxBytes) => readBounded(Deno.openSync(path), maxBytes),
};

/**
 * Builds the AWS and GitHub clients for a desired state, counting their calls. They share
 * `breaker`: an endpoint that timed out on every attempt of a call fails every later request at
 * once (lib/requests.ts).
 */
export function buildClients(
  desired: DesiredState,
  env: Record<string, string | undefined>,
  counter: CallCounter,
  limits: GithubRequestLimits = { timeoutMs: desired.requestTimeoutSec * 1000 },
  breaker: EndpointBreaker = new EndpointBreaker(),
): Clients {
  const common = {
    region: desired.region,
    maxAttempts: AWS_MAX_ATTEMPTS,
    requestHandler: awsRequestHandler(limits.timeoutMs),
  };
  // The SDK also reads these variables itself; passing them keeps the injected env authoritative.
  const endpoint = (service: string) => {
    const url = env[`AWS_ENDPOINT_URL_${service.toUpperCase()}`] ?? env.AWS_ENDPOINT_URL;
    return url ? { endpoint: url } : {};
  };
  const ec2 = new EC2Client({ ...common, ...endpoint("EC2") });
  const sqs = new SQSClient({ ...common, ...endpoint("SQS") });
  const dynamo = new DynamoDBClient({ ...common, ...endpoint("DynamoDB") });
  for (const [client, service] of [[ec2, "EC2"], [sqs, "SQS"], [dynamo, "DynamoDB"]] as const) {
    countAwsCalls(client, service, counter);
    explainAwsTimeouts(client, service, limits.timeoutMs, breaker);
  }
  const ddb = DynamoDBDocumentClient.from(dynamo, {
    marshallOptions: { removeUndefinedValues: true },
  });
  const github = buildGithub(desired, limits, breaker);
  if (github) countGithubCalls(github, counter);
  return { ec2, sqs, ddb, ...(github ? { github } : {}) };
}

/**
 * Octokit with retries (5xx, network) and rate-limit waits; a PAT or a GitHub App as credential.
 * The breaker's plugin comes first, so it wraps each attempt inside the retries.
 */
function buildGithub(
  desired: DesiredState,
  limits: GithubRequestLimits,
  breaker: EndpointBreaker,
): Octokit | undefined {
  const options = githubClientOptions(desired.github, limits);
  if (!options) return undefined;
  const GithubClient = Octokit.plugin(githubBreakerPlugin(breaker), retry, throttling);
  const github = new GithubClient(options);
  tripOnGithubTimeouts(github, breaker, limits.timeoutMs);
  return github;
}

function makeLogger(io: Io, redactor: Redactor, quiet: boolean): Logger {
  return {
    info: (message) => {
      if (!quiet) io.stderr(redactor.redact(message));
    },
    warn: (message) => io.stderr(redactor.redact(`warning: ${message}`)),
  };
}

/**
 * Output for GitHub Actions (`GITHUB_ACTIONS=true`), on stderr so `--json` stays clean: every
 * secret masked as it is registered, a group per task, annotations, and the job summary appended
 * to `$GITHUB_STEP_SUMMARY`. Outside Actions it only feeds the redactor.
 */
export function actionsOutput(env: Record<string, string | undefined>, io: Io, redactor: Redactor) {
  const enabled = env.GITHUB_ACTIONS === "true";
  const masked = new Set<string>();
  const summary = (markdown: string) => {
    const path = env.GITHUB_STEP_SUMMARY;
    if (!enabled || !path) return;
    try {
      Deno.writeTextFileSync(path, redactor.redact(markdown), { append: true });
    } catch (error) {
      io.stderr(`warning: cannot append the job summary to ${path}: ${(error as Error).message}`);
    }
  };
  return {
    secret(value: string | undefined): void {
      redactor.add(value);
      if (!enabled) return;
      for (const s of redactor.secrets) {
        if (!masked.has(s)) io.stderr(actions.addMask(s));
        masked.add(s);
      }
    },
    /**
     * Wraps a task so its log lines fall in its own group. Tasks run side by side, so each one's
     * lines are held until it finishes and then printed as one group (its failure line, printed
     * by runTasks, follows the group).
     */
    grouped(name: TaskName, task: Task<DesiredState>): Task<DesiredState> {
      if (!enabled) return task;
      return async (ctx) => {
        const held: [keyof Logger, string][] = [];
        const log: Logger = {
          info: (message) => held.push(["info", message]),
          warn: (message) => held.push(["warn", message]),
        };
        try {
          return await task({ ...ctx, log });
        } finally {
          io.stderr(actions.group(`refresh ${name}`));
          for (const [level, message] of held) ctx.log[level](message);
          io.stderr(actions.endGroup());
        }
      };
    },
    finish(report: RunReport): void {
      if (!enabled) return;
      for (const line of actions.annotations(report)) io.stderr(redactor.redact(line));
      summary(actions.jobSummary(report));
    },
    configError(error: ConfigError): void {
      if (!enabled) return;
      const message = error.problems.join("\n");
      io.stderr(
        redactor.redact(actions.annotation("error", "refresh: invalid desired state", message)),
      );
      summary(actions.configErrorSummary(error.problems));
    },
  };
}

/** Runs refresh once and returns its exit code. */
export async function main(
  args: string[],
  env: Record<string, string | undefined>,
  io: Io = realIo,
): Promise<number> {
  const redactor = new Redactor();
  const gha = actionsOutput(env, io, redactor);
  gha.secret(env.GITHUB_TOKEN);
  gha.secret(env.GITHUB_APP_PRIVATE_KEY);
  try {
    return await run(args, env, io, redactor, gha);
  } catch (error) {
    // A bug, not a task failure (those are results): report it without a stack, redacted.
    io.stderr(redactor.redact(`refresh: unexpected error: ${describeError(error)}`));
    return 1;
  }
}

async function run(
  args: string[],
  env: Record<string, string | undefined>,
  io: Io,
  redactor: Redactor,
  gha: ReturnType<typeof actionsOutput>,
): Promise<number> {
  let desired: DesiredState | "help";
  try {
    desired = parseDesiredState({ args, env, readTextFile: io.readTextFile });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    io.stderr(redactor.redact(error.message));
    gha.configError(error);
    return 2;
  }
  if (desired === "help") {
    io.stdout(helpText());
    return 0;
  }

  // Counted from here: flags and files are read, the first request is about to go.
  const budget = runBudget(desired.deadlineMin * 60_000, io.monotonic);
  const counter = new CallCounter();
  const breaker = new EndpointBreaker();
  const clients = buildClients(desired, env, counter, undefined, breaker);
  const log = makeLogger(io, redactor, desired.json);
  const results = await runTasks(
    desired.tasks.map((t) => [t, gha.grouped(t, IMPLEMENTATIONS[t])]),
    {
      desired,
      clients,
      now: () => new Date(),
      log,
      dryRun: desired.dryRun,
      secret: gha.secret,
      budget,
    },
  );
  const report: RunReport = {
    version: 1,
    dryRun: desired.dryRun,
    region: desired.region,
    table: desired.table,
    results,
    calls: counter.toJSON(),
    writeCalls: counter.writes(),
    unreachable: breaker.failures(),
    exitCode: exitCodeOf(results),
  };
  gha.finish(report);
  io.stdout(redactor.redact(desired.json ? renderJson(report) : renderText(report)));
  return report.exitCode;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args, Deno.env.toObject()));
}
