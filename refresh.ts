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
import { CloudWatchClient } from "npm:@aws-sdk/client-cloudwatch@3.1164.0";
import { Lease } from "./lib/operations/lease.ts";
import { publishRun, wantsCloudWatch } from "./lib/operations/publish.ts";
import { runLoop } from "./lib/operations/loop.ts";
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

  if (desired.operations.everySec !== null) {
    return await loop(desired, env, io, redactor, gha, desired.operations.everySec);
  }
  const lease = desired.dryRun ? undefined : newLease(desired, env);
  if (lease) {
    const taken = await takeLease(lease, io, redactor);
    if (taken !== "taken" && taken !== "no table") {
      // Another run reconciles the pool: this one says who, until when, and writes nothing.
      await lease.close();
      const report: RunReport = {
        version: 1,
        dryRun: false,
        region: desired.region,
        table: desired.table,
        results: [],
        calls: {},
        writeCalls: 0,
        exitCode: 0,
        operations: [taken],
      };
      io.stdout(redactor.redact(desired.json ? renderJson(report) : renderText(report)));
      return 0;
    }
  }
  try {
    return await cycle(desired, env, io, redactor, gha, lease?.lease);
  } finally {
    await lease?.close();
  }
}

/** The lease of a run, on a DynamoDB client of its own (its calls are not the tasks'). */
function newLease(desired: DesiredState, env: Record<string, string | undefined>) {
  const dynamo = new DynamoDBClient(awsOptions(desired, env, "DynamoDB"));
  const ddb = DynamoDBDocumentClient.from(dynamo);
  // Who holds it, for the others' messages: a workflow run, else the host (no extra permission).
  const where = env.GITHUB_RUN_ID
    ? `github-run-${env.GITHUB_RUN_ID}`
    : env.HOSTNAME ?? env.COMPUTERNAME ?? "host";
  const holder = `${where}:${Deno.pid}:${crypto.randomUUID().slice(0, 8)}`;
  const lease = new Lease(
    ddb,
    desired.table,
    holder,
    desired.operations.leaseSec,
    () => new Date(),
  );
  return {
    lease,
    close: async () => {
      await lease.release().catch(() => {});
      dynamo.destroy();
    },
  };
}

/**
 * Takes the lease: "taken", "no table" (a new account: the table task makes it, so there is
 * nothing another run could be reconciling; or the lease could not be read or written: then the
 * run goes on without it, with a warning), or else the sentence saying who holds it until when.
 */
async function takeLease(
  lease: { lease: Lease },
  io: Io,
  redactor: Redactor,
): Promise<string> {
  try {
    const attempt = await lease.lease.take();
    if (attempt.held) return "taken";
    return `lease held by ${attempt.by.holder} until ${attempt.by.until}: another refresh is ` +
      "reconciling this pool; this run writes nothing";
  } catch (error) {
    if ((error as Error).name === "ResourceNotFoundException") return "no table";
    // Every write of the tasks is conditional anyway: a lease that cannot be read or written
    // (DynamoDB failing) does not stop the run, which reports what failed.
    io.stderr(redactor.redact(
      `warning: the lease on the pool could not be taken (${
        describeError(error)
      }); running without it`,
    ));
    return "no table";
  }
}

/**
 * One reconciliation: the tasks, the report, the operations (metrics, alarm, dashboard), the exit
 * code. While it runs, `lease` (when held) is renewed every third of its length.
 */
async function cycle(
  desired: DesiredState,
  env: Record<string, string | undefined>,
  io: Io,
  redactor: Redactor,
  gha: ReturnType<typeof actionsOutput>,
  lease?: Lease,
): Promise<number> {
  const started = performance.now();
  // Counted from here: flags and files are read, the first request is about to go.
  const budget = runBudget(desired.deadlineMin * 60_000, io.monotonic);
  const counter = new CallCounter();
  const breaker = new EndpointBreaker();
  const clients = buildClients(desired, env, counter, undefined, breaker);
  const log = makeLogger(io, redactor, desired.json);
  const renewing = lease?.current
    ? setInterval(() => lease.renew().catch(() => false), desired.operations.leaseSec * 1000 / 3)
    : undefined;
  try {
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
    const operations = await runOperations(desired, env, report, started, counter);
    if (lease?.current) {
      operations.unshift(`lease held by ${lease.holder} until ${lease.current.until}`);
    }
    if (operations.length) report.operations = operations;
    gha.finish(report);
    io.stdout(redactor.redact(desired.json ? renderJson(report) : renderText(report)));
    return report.exitCode;
  } finally {
    clearInterval(renewing);
    clients.ec2.destroy();
    clients.sqs.destroy();
    clients.ddb.destroy();
  }
}

/**
 * After the tasks, in CloudWatch (lib/operations/publish.ts): the alarm, the dashboard and the
 * run's metrics, when asked for; none when not (no client built). Lines for the report.
 */
async function runOperations(
  desired: DesiredState,
  env: Record<string, string | undefined>,
  report: RunReport,
  started: number,
  counter: CallCounter,
): Promise<string[]> {
  if (!wantsCloudWatch(desired.operations)) return [];
  const cloudwatch = buildCloudWatch(desired, env, counter);
  try {
    return await publishRun(cloudwatch, {
      ops: desired.operations,
      table: desired.table,
      region: desired.region,
      classes: Object.keys(desired.pools.classes).sort(),
      dryRun: desired.dryRun,
      report,
      runSeconds: (performance.now() - started) / 1000,
      rateLimitRemaining: counter.githubRateLimitRemaining,
    });
  } finally {
    cloudwatch.destroy();
    report.calls = counter.toJSON();
  }
}

/**
 * An AWS client's options beside the tasks' (the lease's, CloudWatch's): the region, retries, a
 * request timeout, and the endpoint override for `service` when one is set.
 */
function awsOptions(
  desired: DesiredState,
  env: Record<string, string | undefined>,
  service: string,
) {
  const url = env[`AWS_ENDPOINT_URL_${service.toUpperCase()}`] ?? env.AWS_ENDPOINT_URL;
  return {
    region: desired.region,
    maxAttempts: AWS_MAX_ATTEMPTS,
    requestHandler: awsRequestHandler(desired.requestTimeoutSec * 1000),
    ...(url ? { endpoint: url } : {}),
  };
}

/** The CloudWatch client, with the same endpoint rules, timeouts and counting as the others. */
function buildCloudWatch(
  desired: DesiredState,
  env: Record<string, string | undefined>,
  counter: CallCounter,
): CloudWatchClient {
  const client = new CloudWatchClient(awsOptions(desired, env, "CloudWatch"));
  countAwsCalls(client, "CloudWatch", counter);
  return client;
}

/**
 * `--every` (lib/operations/loop.ts): cycles while this process holds the lease, a standby while
 * another does; SIGTERM and SIGINT end it after the cycle in flight, the lease released; exit 0.
 */
async function loop(
  desired: DesiredState,
  env: Record<string, string | undefined>,
  io: Io,
  redactor: Redactor,
  gha: ReturnType<typeof actionsOutput>,
  everySec: number,
): Promise<number> {
  const stop = Promise.withResolvers<void>();
  const onSignal = () => stop.resolve();
  for (const signal of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(signal, onSignal);
  const { lease, close } = newLease(desired, env);
  try {
    await runLoop({
      everySec,
      lease,
      stop: stop.promise,
      cycle: (held) => cycle(desired, env, io, redactor, gha, held),
      take: () => takeLease({ lease }, io, redactor),
      log: (line) => io.stderr(redactor.redact(line)),
    });
  } finally {
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      Deno.removeSignalListener(signal, onSignal);
    }
    await close();
  }
  io.stderr("refresh: stopped by a signal after its cycle; lease released");
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args, Deno.env.toObject()));
}
