/**
 * Phase 6 of the reaper, the runner registrations: lists the registrations of the repository or
 * organization and deletes those that are provably this pool's (they carry the pool's label,
 * `poolRunnerLabel(region, table)`, which the bootstrap gives every registration, or their
 * instance is known to the pool: a record, this run's terminations, its ownership tag) and whose
 * instance is provably dead (this run terminated it, or EC2 reports it `terminated`; never
 * merely missing from a listing). Busy ones are left alone; deletions stop after a time budget,
 * so a backlog drains over runs ({@link reconcileRunners}). Registrations of other pools and
 * other systems are never touched, whatever their names. Writes: runner deletions on GitHub.
 *
 * @module
 */
import type { Octokit } from "npm:@octokit/rest@22.0.1";
import { poolRunnerLabel } from "../contract.ts";
import { describeError } from "../task.ts";
import type { ReaperContext, ReaperOptions, RunnerScope } from "./context.ts";
import { readEnded } from "./ended.ts";
import type { Pool } from "./reads.ts";
import type { Report } from "./report.ts";

export interface GithubRunner {
  id: number;
  name: string;
  status: string;
  busy: boolean;
  labels?: { name?: string }[];
}

/** The instance id a runner registration's name starts with (`i-0abc-2` -> `i-0abc`). */
export function runnerInstanceId(name: string): string | undefined {
  // The whole leading id: i-0abc is not a prefix match of i-0abcd-large.
  return /^(i-[0-9a-f]{8,17})(?:-|$)/.exec(name)?.[1];
}

/** The registrations' API path and parameters: a repository's or an organization's. */
function runnersPath(scope: RunnerScope) {
  return "repo" in scope
    ? { path: "/repos/{owner}/{repo}", params: { owner: scope.repo.owner, repo: scope.repo.name } }
    : { path: "/orgs/{org}", params: { org: scope.org } };
}

/** Every runner registration of the scope, 100 per page. */
export function listRunners(github: Octokit, scope: RunnerScope): Promise<GithubRunner[]> {
  const base = runnersPath(scope);
  return github.paginate(`GET ${base.path}/actions/runners`, { ...base.params, per_page: 100 });
}

/**
 * Why a registration is provably the pool's, or undefined: the pool's label, or an instance the
 * pool knows (its record, this run's termination, its ownership tag as EC2 reports it).
 */
export function poolProof(
  runner: Pick<GithubRunner, "labels">,
  id: string,
  known: { label: string; records: ReadonlySet<string>; terminated: ReadonlySet<string> },
  ownedByTag: boolean,
): string | undefined {
  if (runner.labels?.some((l) => l.name === known.label)) return `label ${known.label}`;
  if (known.terminated.has(id)) return "terminated by this run";
  if (known.records.has(id)) return "instance record";
  if (ownedByTag) return "instance tagged the pool's";
  return undefined;
}

/**
 * Reconciles the pool's runner registrations with its instances: takes every registration (100
 * per page) and deletes each named after an instance (`<instance id>-<n>`) that is provably the
 * pool's ({@link poolProof}) and provably dead: terminated by this run (deleted even while still
 * shown online), or offline and reported `terminated` by EC2 (one look-up by id for the
 * registrations whose instance the pool does not hold alive). Busy runners are left alone and
 * reported. Deletions stop when the time budget is spent (GitHub spaces them one second apart);
 * what is left is counted and deleted by the next runs.
 */
export async function reconcileRunners(
  ctx: ReaperContext,
  pool: Pool,
  terminated: Set<string>,
  report: Pick<Report, "counts" | "changes" | "warnings">,
  options: Pick<ReaperOptions, "runnerBudgetMs" | "clock"> & {
    /** The registrations, when their listing was started with the other reads. */
    listed?: Promise<GithubRunner[]>;
    /** The ids of the instance records read: a registration of one is the pool's. */
    records?: ReadonlySet<string>;
  } = {},
): Promise<void> {
  const { counts, changes, warnings } = report;
  const { github } = ctx.clients;
  const scope = ctx.desired.github.scope;
  if (!github || !scope) {
    if (terminated.size) {
      warnings.push(
        `no GitHub ${
          github ? "--repo or --org" : "token"
        }: runner registrations of ${terminated.size} terminated instances not deleted`,
      );
    }
    return;
  }
  const clock = options.clock ?? (() => performance.now());
  const deadline = clock() + (options.runnerBudgetMs ?? ctx.desired.reaper.runnerCleanupSec * 1000);
  const base = runnersPath(scope);
  try {
    const runners = await (options.listed ?? listRunners(github, scope));
    const known = {
      label: poolRunnerLabel(ctx.desired.region, ctx.desired.table),
      records: options.records ?? new Set<string>(),
      terminated,
    };
    // Offline registrations of instances the pool does not hold alive: is EC2 sure they ended?
    const unsure = runners.flatMap((r) => {
      const id = runnerInstanceId(r.name);
      return id && r.status === "offline" && !terminated.has(id) && !pool.alive.has(id) &&
          !pool.foreign.has(id)
        ? [id]
        : [];
    });
    const ended = await readEnded(ctx.clients.ec2, unsure, ctx.desired.table, pool.templateIds);
    let unproven = 0;
    for (const runner of runners) {
      const id = runnerInstanceId(runner.name);
      if (!id) continue;
      const reaped = terminated.has(id);
      const dead = reaped || (runner.status === "offline" && ended.has(id));
      if (!dead) continue;
      const proof = poolProof(runner, id, known, ended.get(id)?.proof !== undefined);
      if (!proof) {
        unproven++;
        continue;
      }
      const target = `runner ${runner.name} (#${runner.id})`;
      if (!runner.busy && !ctx.dryRun) {
        if (clock() >= deadline || ctx.budget.expired()) {
          counts.runnersLeft++;
          continue;
        }
        try {
          await github.request(`DELETE ${base.path}/actions/runners/{runner_id}`, {
            ...base.params,
            runner_id: runner.id,
          });
        } catch (error) {
          const status = (error as { status?: number }).status;
          if (status === 404) continue;
          if (status !== 422) throw error;
          runner.busy = true;
        }
      }
      // This run terminated only instances proven the pool's: that is both proofs at once.
      const why = reaped
        ? `${ctx.dryRun ? "would be " : ""}terminated by this run`
        : `EC2 reports it terminated; ${proof}`;
      if (runner.busy) {
        counts.runnersBusy++;
        warnings.push(`${target} of terminated instance ${id} is busy; left alone`);
      } else {
        counts.runnersDeleted++;
        changes.push({ action: "delete-runner", target, detail: `instance ${id}: ${why}` });
      }
    }
    if (unproven) {
      ctx.log.info(
        `reaper: ${unproven} registrations of terminated instances are not provably this pool's (no label ${known.label}, no record, no ownership tag); left alone`,
      );
    }
    if (counts.runnersLeft) {
      warnings.push(
        `${counts.runnersLeft} runner registrations of terminated instances left for the next run (the runner phase's time budget, --runner-cleanup-sec, was spent)`,
      );
    }
  } catch (error) {
    warnings.push(`runner registrations not cleaned: ${describeError(error)}`);
  }
}
