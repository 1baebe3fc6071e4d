/**
 * Phase 6 of the reaper, the runner registrations: lists the pool's GitHub runner registrations
 * (`<instance id>-<n>`) and deletes those of instances not alive (offline ones, and the ones of
 * instances this run terminated), busy ones excepted, within a time budget so a backlog drains
 * over runs ({@link reconcileRunners}). Writes: runner deletions on GitHub.
 *
 * @module
 */
import type { Octokit } from "npm:@octokit/rest@22.0.1";
import { describeError } from "../task.ts";
import type { ReaperContext, ReaperOptions, RunnerScope } from "./context.ts";
import { ALIVE_EC2, describeIds, type Pool } from "./reads.ts";
import type { Report } from "./report.ts";

export interface GithubRunner {
  id: number;
  name: string;
  status: string;
  busy: boolean;
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
 * Reconciles the pool's runner registrations with its live instances: lists them (100 per page)
 * and deletes each whose name starts with the id of an instance not alive in EC2, when it is
 * offline, or online but its instance was terminated by this run. Busy runners are left alone
 * and reported. Deletions stop when the time budget is spent (GitHub spaces them one second
 * apart); what is left is counted and deleted by the next runs.
 */
export async function reconcileRunners(
  ctx: ReaperContext,
  pool: Pool,
  terminated: Set<string>,
  report: Pick<Report, "counts" | "changes" | "warnings">,
  options: Pick<ReaperOptions, "runnerBudgetMs" | "clock"> & {
    /** The registrations, when their listing was started with the other reads. */
    listed?: Promise<GithubRunner[]>;
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
    // Registrations of instances the pool does not hold alive: is any alive in EC2 at all?
    const named = runners.flatMap((r) => {
      const id = runnerInstanceId(r.name);
      return id && !pool.alive.has(id) && !pool.foreign.has(id) ? [id] : [];
    });
    const unknown = [...new Set(named)].filter((id) => !terminated.has(id));
    const elsewhere = new Set(
      (await describeIds(ctx.clients.ec2, unknown))
        .filter((i) => ALIVE_EC2.includes(i.State?.Name ?? ""))
        .map((i) => i.InstanceId!),
    );
    for (const runner of runners) {
      const id = runnerInstanceId(runner.name);
      if (!id) continue;
      const reaped = terminated.has(id);
      const dead = reaped ||
        (!pool.alive.has(id) && !pool.foreign.has(id) && !elsewhere.has(id));
      if (!dead || (runner.status !== "offline" && !reaped)) continue;
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
      if (runner.busy) {
        counts.runnersBusy++;
        warnings.push(`${target} of gone instance ${id} is busy; left alone`);
      } else {
        counts.runnersDeleted++;
        changes.push({ action: "delete-runner", target, detail: `instance ${id} is gone` });
      }
    }
    if (counts.runnersLeft) {
      warnings.push(
        `${counts.runnersLeft} runner registrations of gone instances left for the next run (the runner phase's time budget, --runner-cleanup-sec, was spent)`,
      );
    }
  } catch (error) {
    warnings.push(`runner registrations not cleaned: ${describeError(error)}`);
  }
}
