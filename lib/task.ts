/**
 * What every task shares: the context it is given (desired state, clients, clock, logger, the
 * run's time budget) and the result it returns as data. {@link runTasks} runs tasks one after
 * another; a task that throws is reported as failed and the others still run; once the run's
 * deadline has passed, the tasks not yet started are reported as skipped.
 *
 * @module
 */
import type { DynamoDBDocumentClient } from "npm:@aws-sdk/lib-dynamodb@3.1162.0";
import type { EC2Client } from "npm:@aws-sdk/client-ec2@3.1169.0";
import type { SQSClient } from "npm:@aws-sdk/client-sqs@3.1169.0";
import type { Octokit } from "npm:@octokit/rest@22.0.1";
import type { DesiredState, TaskName } from "./config.ts";

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

export interface TaskContext {
  desired: DesiredState;
  clients: Clients;
  /** The clock; every timestamp a task writes comes from here. */
  now: () => Date;
  log: Logger;
  dryRun: boolean;
  /** Registers a value that must never be printed (the entry masks and redacts it). */
  secret: (value: string) => void;
  /** The run's deadline: no task starts after it; long tasks check it between units of work. */
  budget: Budget;
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

export type Task = (ctx: TaskContext) => Promise<TaskOutcome>;

/**
 * Runs the tasks in order; each result is returned whether the task succeeded or failed. A task
 * not yet started when the budget has expired is not started: it is reported as `skipped`, with
 * the reason as its error, so the run exits 1.
 */
export async function runTasks(
  tasks: [TaskName, Task][],
  ctx: TaskContext,
): Promise<TaskResult[]> {
  const results: TaskResult[] = [];
  for (const [name, task] of tasks) {
    if (ctx.budget.expired()) {
      const reason = `not started: the run's ${
        describeDuration(ctx.budget.totalMs)
      } deadline had passed (--deadline-min); the next run does it`;
      ctx.log.warn(`${name}: ${reason}`);
      results.push({
        task: name,
        status: "skipped",
        summary: "skipped, the run's deadline had passed",
        found: {},
        changes: [],
        warnings: [],
        error: reason,
        durationMs: 0,
      });
      continue;
    }
    const started = performance.now();
    try {
      const outcome = await task(ctx);
      const status: TaskStatus = outcome.changes.length === 0
        ? "unchanged"
        : ctx.dryRun
        ? "planned"
        : "changed";
      results.push({
        task: name,
        status,
        summary: outcome.summary,
        found: outcome.found,
        changes: outcome.changes,
        warnings: outcome.warnings ?? [],
        durationMs: Math.round(performance.now() - started),
      });
    } catch (error) {
      const message = describeError(error);
      ctx.log.warn(`${name}: failed: ${message}`);
      results.push({
        task: name,
        status: "failed",
        summary: "failed",
        found: {},
        changes: [],
        warnings: [],
        error: message,
        durationMs: Math.round(performance.now() - started),
      });
    }
  }
  return results;
}

/** A one-line description of an error: its name (when not plain Error) and message. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const name = error.name && error.name !== "Error" ? `${error.name}: ` : "";
    return `${name}${error.message}`;
  }
  return String(error);
}
