/**
 * What every task shares: the context it is given (desired state, clients, clock, logger) and the
 * result it returns as data. {@link runTasks} runs tasks one after another; a task that throws is
 * reported as failed and the others still run.
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

export interface TaskContext {
  desired: DesiredState;
  clients: Clients;
  /** The clock; every timestamp a task writes comes from here. */
  now: () => Date;
  log: Logger;
  dryRun: boolean;
  /** Registers a value that must never be printed (the entry masks and redacts it). */
  secret: (value: string) => void;
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

export type TaskStatus = "unchanged" | "changed" | "planned" | "failed";

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

/** Runs the tasks in order; each result is returned whether the task succeeded or failed. */
export async function runTasks(
  tasks: [TaskName, Task][],
  ctx: TaskContext,
): Promise<TaskResult[]> {
  const results: TaskResult[] = [];
  for (const [name, task] of tasks) {
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
