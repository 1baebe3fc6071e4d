/**
 * What every task shares: the list of tasks and what each waits for ({@link TASKS},
 * {@link DEPENDS_ON}), the context a task is given (its part of the desired state, clients, clock,
 * logger, the run's time budget) and the result it returns as data. {@link runTasks} starts each
 * task as soon as the tasks it depends on have finished, so independent tasks run side by side
 * and a run lasts as long as its longest chain; results come back in the fixed task order
 * whatever order the tasks finish in. A task that throws is reported as failed and the others
 * still run; a task that fails because an endpoint stopped answering earlier in the run (see
 * lib/requests.ts) is reported as skipped; once the run's deadline has passed, the tasks not yet
 * started are reported as skipped. Reconciles and writes nothing itself.
 *
 * Nothing here imports lib/config.ts: config imports the task modules, which import this one, so
 * each task declares the part of the desired state it reads as the type parameter of
 * {@link TaskContext}, and config's `DesiredState` fits every one of them.
 *
 * @module
 */
import type { DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import type { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import type { SQSClient } from "npm:@aws-sdk/client-sqs@3.1169.0";
import type { Octokit } from "npm:@octokit/rest@22.0.1";

/** The tasks refresh runs, in the order they are reported (and listed in `--only`). */
export const TASKS = [
  "table",
  "launch-template",
  "resource-pools",
  "parameters",
  "github-token",
  "reaper",
  "warm-pool",
] as const;
export type TaskName = typeof TASKS[number];

/**
 * What each task waits for before it starts, when both are in the run: every task writes to the
 * table, so waits for it to exist; the warm pool launches from the launch template into the
 * subnets and queues the parameters and resource-pools tasks keep, and counts what the reaper left.
 * The others read and write disjoint things and run side by side. The reaper starts with them and
 * waits for the launch-template task only before it reads the template's default version, which
 * that task may have just changed ({@link TaskContext.settled}): its table reads go ahead
 * meanwhile. A task listed here, or awaited with `settled`, is always before it in {@link TASKS}.
 */
export const DEPENDS_ON: Readonly<Record<TaskName, readonly TaskName[]>> = {
  "table": [],
  "launch-template": ["table"],
  "resource-pools": ["table"],
  "parameters": ["table"],
  "github-token": ["table"],
  "reaper": ["table"],
  "warm-pool": ["table", "launch-template", "resource-pools", "parameters", "reaper"],
};

/** The part of the desired state every task may read (lib/config.ts's shared inputs). */
export interface SharedDesired {
  region: string;
  /** `owner-repo` (or the organization): the stem of every default resource name. */
  prefix: string;
  table: string;
  tasks: TaskName[];
  dryRun: boolean;
  json: boolean;
  /** No task starts after this many minutes (see {@link TaskContext.budget}). */
  deadlineMin: number;
  /** Each attempt of a request is abandoned after this many seconds. */
  requestTimeoutSec: number;
}

export interface Clients {
  ec2: EC2Client;
  sqs: SQSClient;
  /** DynamoDB with lib-dynamodb's marshalling; it also sends plain DynamoDB commands. */
  ddb: DynamoDBDocumentClient;
  /** Absent when no GitHub credential was given. */
  github?: Octokit;
}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
}

/**
 * The run's deadline, on a monotonic clock (`performance.now()`), not on {@link TaskContext.now},
 * which tests freeze and move. A task that does many units of work (the reaper) asks
 * {@link expired} between them and stops, reporting what it left, once it is true.
 */
export interface Budget {
  /** Whether the deadline has passed: start no new unit of work. */
  expired(): boolean;
  /** Milliseconds left before the deadline, 0 once it has passed. */
  remainingMs(): number;
  /** The whole budget in milliseconds, for messages ("the run's 10 min deadline"). */
  readonly totalMs: number;
}

/** A budget of `totalMs` from now, on `clock` (milliseconds, monotonic; tests pass their own). */
export function runBudget(
  totalMs: number,
  clock: () => number = () => performance.now(),
): Budget {
  const end = clock() + totalMs;
  return {
    totalMs,
    expired: () => clock() >= end,
    remainingMs: () => Math.max(0, end - clock()),
  };
}

/** "10 min", "1.5 s": a budget's length for messages. */
export function describeDuration(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms >= 1000) return `${Number((ms / 1000).toFixed(1))} s`;
  return `${Math.round(ms)} ms`;
}

/** What a task is given; `D` is the part of the desired state it reads. */
export interface TaskContext<D = SharedDesired> {
  desired: D;
  clients: Clients;
  /** The clock; every timestamp a task writes comes from here. */
  now: () => Date;
  log: Logger;
  dryRun: boolean;
  /** Registers a value that must never be printed (the entry masks and redacts it). */
  secret: (value: string) => void;
  /** The run's deadline: no task starts after it; long tasks check it between units of work. */
  budget: Budget;
  /**
   * Resolves once `task` has finished in this run, whatever its outcome (at once when it is not
   * part of the run): a task awaits another's result mid-way instead of before it starts. Only a
   * task before the caller in {@link TASKS} may be awaited. Absent outside {@link runTasks}: no
   * task to wait for.
   */
  settled?: (task: TaskName) => Promise<void>;
}

/** One change made, or under `--dry-run` one change that would be made. */
export interface Change {
  action: string;
  target: string;
  detail?: string;
}

/** What a task returns. `found` is what it read of the actual state, as plain data. */
export interface TaskOutcome {
  summary: string;
  found: Record<string, unknown>;
  changes: Change[];
  warnings?: string[];
}

/** `skipped`: not started because the run's deadline had passed (its `error` says so). */
export type TaskStatus = "unchanged" | "changed" | "planned" | "failed" | "skipped";

export interface TaskResult {
  task: TaskName;
  status: TaskStatus;
  summary: string;
  found: Record<string, unknown>;
  changes: Change[];
  warnings: string[];
  error?: string;
  durationMs: number;
}

export type Task<D = SharedDesired> = (ctx: TaskContext<D>) => Promise<TaskOutcome>;

/**
 * The name of the error a request fails with, without being sent, when its endpoint already timed
 * out on every attempt of an earlier call in this run (lib/requests.ts throws it; here a task that
 * fails with it is reported as skipped, not as a failure of its own).
 */
export const ENDPOINT_DOWN = "EndpointDownError";

/**
 * Runs the tasks, each as soon as those it depends on ({@link DEPENDS_ON}) among `tasks` have
 * finished, whatever their outcome (a dependency that failed leaves its dependents to run and
 * report what they can, as a failed task leaves every other task running). Returns one result per
 * task in the order of `tasks`. A task not yet started when the budget has expired is not
 * started: it is reported as `skipped`, with the reason as its error, so the run exits 1.
 */
export async function runTasks<D>(
  tasks: [TaskName, Task<D>][],
  ctx: TaskContext<D>,
  dependsOn: Readonly<Record<TaskName, readonly TaskName[]>> = DEPENDS_ON,
): Promise<TaskResult[]> {
  const byName = new Map(tasks);
  const running = new Map<TaskName, Promise<TaskResult>>();
  const settled = async (name: TaskName): Promise<void> => {
    if (byName.has(name)) await start(name);
  };
  const start = (name: TaskName): Promise<TaskResult> => {
    let result = running.get(name);
    if (!result) {
      const task = byName.get(name)!;
      const waits = dependsOn[name].filter((d) => byName.has(d) && d !== name);
      result = Promise.all(waits.map(start)).then(() => runOne(name, task, { ...ctx, settled }));
      running.set(name, result);
    }
    return result;
  };
  return await Promise.all(tasks.map(([name]) => start(name)));
}

/** Runs one task now (or reports it skipped when the deadline has passed); never throws. */
async function runOne<D>(name: TaskName, task: Task<D>, ctx: TaskContext<D>): Promise<TaskResult> {
  const empty = { found: {}, changes: [], warnings: [] };
  if (ctx.budget.expired()) {
    const reason = `not started: the run's ${
      describeDuration(ctx.budget.totalMs)
    } deadline had passed (--deadline-min); the next run does it`;
    ctx.log.warn(`${name}: ${reason}`);
    return {
      task: name,
      status: "skipped",
      summary: "skipped, the run's deadline had passed",
      ...empty,
      error: reason,
      durationMs: 0,
    };
  }
  const started = performance.now();
  const durationMs = () => Math.round(performance.now() - started);
  try {
    const outcome = await task(ctx);
    const status: TaskStatus = outcome.changes.length === 0
      ? "unchanged"
      : ctx.dryRun
      ? "planned"
      : "changed";
    return {
      task: name,
      status,
      summary: outcome.summary,
      found: outcome.found,
      changes: outcome.changes,
      warnings: outcome.warnings ?? [],
      durationMs: durationMs(),
    };
  } catch (error) {
    const message = describeError(error);
    const down = (error as { name?: string; endpoint?: string })?.name === ENDPOINT_DOWN;
    ctx.log.warn(`${name}: ${down ? "skipped" : "failed"}: ${message}`);
    return {
      task: name,
      status: down ? "skipped" : "failed",
      summary: down
        ? `skipped, ${(error as { endpoint: string }).endpoint} did not answer earlier in this run`
        : "failed",
      ...empty,
      error: message,
      durationMs: durationMs(),
    };
  }
}

/** A one-line description of an error: its name (when not plain Error) and message. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const name = error.name && error.name !== "Error" ? `${error.name}: ` : "";
    return `${name}${error.message}`;
  }
  return String(error);
}
