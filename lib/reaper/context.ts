/**
 * What the reaper's modules are given: the part of a task's context they use, and the reaper's
 * own options. Typed here, not with lib/config.ts's desired state, so no reaper module imports
 * the configuration (which imports the reaper's inputs). Reconciles and writes nothing.
 *
 * @module
 */
import type { Budget, Clients, Logger, TaskName } from "../task.ts";
import type { DesiredReaper } from "./inputs.ts";

/** Where the pool's runners register: a repository or an organization. */
export type RunnerScope = { repo: { owner: string; name: string } } | { org: string };

/** The desired state the reaper reads: a structural part of lib/config.ts's `DesiredState`. */
export interface ReaperDesired {
  /** The pool's region (with the table, it names the pool's runner label). */
  region: string;
  table: string;
  reaper: DesiredReaper;
  launchTemplate: { name: string };
  github: { scope?: RunnerScope };
}

/** The reaper's context: a task context (lib/task.ts) with {@link ReaperDesired}. */
export interface ReaperContext {
  desired: ReaperDesired;
  clients: Clients;
  /** The clock; every timestamp the reaper writes comes from here. */
  now: () => Date;
  log: Logger;
  dryRun: boolean;
  /** The run's deadline: no new unit of work starts after it. */
  budget: Budget;
  /** Resolves once another task has finished in this run (lib/task.ts). */
  settled?: (task: TaskName) => Promise<void>;
}

export interface ReaperOptions {
  /** Query page size (`Limit`); by default DynamoDB's 1 MB pages. */
  pageSize?: number;
  /** Waits between BatchWriteItem retries; tests pass their own. */
  sleep?: (ms: number) => Promise<void>;
  /** Time budget of the runner phase in milliseconds; by default `--runner-cleanup-sec`. */
  runnerBudgetMs?: number;
  /** Monotonic clock in milliseconds for the runner budget; tests pass their own. */
  clock?: () => number;
}

/** The run's deadline: no new unit of work starts after it; what is left is reported. */
export function deadline(ctx: Pick<ReaperContext, "budget">): () => boolean {
  return () => ctx.budget.expired();
}
