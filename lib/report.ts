/**
 * Turns task results into what people read: a concise text block per task, or one JSON document.
 * Pure functions of the results; the entry prints them.
 *
 * @module
 */
import { isPoolView, poolTable, templateLine } from "./rollout.ts";
import { describeDuration, type TaskResult } from "./task.ts";
import { isWarmView, warmLine, warmTable } from "./warm_pool.ts";

export interface RunReport {
  version: 1;
  dryRun: boolean;
  region: string;
  table: string;
  results: TaskResult[];
  /** API calls made, by operation. */
  calls: Record<string, number>;
  writeCalls: number;
  /**
   * Endpoints that timed out on every attempt of a call, so that every later request to them failed
   * at once (lib/requests.ts); absent or empty when all answered.
   */
  unreachable?: {
    endpoint: string;
    call: string;
    timeoutMs: number;
    attempts: number;
  }[];
  exitCode: number;
  /**
   * What the run did beside its tasks (lib/operations/): the lease on the pool, metrics, the
   * alarm and the dashboard; absent when it did none of them.
   */
  operations?: string[];
}

/** 0 when every task succeeded, 1 when any failed or was skipped (the run's deadline passed). */
export function exitCodeOf(results: TaskResult[]): number {
  return results.some((r) => r.status === "failed" || r.status === "skipped") ? 1 : 0;
}

const MARK: Record<TaskResult["status"], string> = {
  unchanged: "ok",
  changed: "changed",
  planned: "planned",
  failed: "FAILED",
  skipped: "SKIPPED",
};

/** Changes listed per task in text; a reaper run may change thousands of instances. */
export const MAX_CHANGE_LINES = 50;

/** One block per task: status and summary, then each change, warning or error indented. */
export function renderText(report: RunReport): string {
  const lines: string[] = [];
  if (report.dryRun) lines.push("dry run: nothing was written");
  for (const r of report.results) {
    lines.push(`${r.task.padEnd(16)} ${MARK[r.status].padEnd(8)} ${r.summary}`);
    for (const c of r.changes.slice(0, MAX_CHANGE_LINES)) {
      const verb = report.dryRun ? `would ${c.action}` : c.action;
      lines.push(`  ${verb} ${c.target}${c.detail ? `: ${c.detail}` : ""}`);
    }
    if (r.changes.length > MAX_CHANGE_LINES) {
      lines.push(
        `  … and ${r.changes.length - MAX_CHANGE_LINES} more changes (all of them in --json)`,
      );
    }
    if (isPoolView(r.found.pool) && Object.keys(r.found.pool.classes).length) {
      lines.push(`  pool, against the ${templateLine(r.found.pool)}:`);
      lines.push(...alignTable(poolTable(r.found.pool)).map((row) => `    ${row}`));
    }
    if (isWarmView(r.found.warm) && Object.keys(r.found.warm.classes).length) {
      lines.push(`  ${warmLine(r.found.warm)}:`);
      lines.push(...alignTable(warmTable(r.found.warm)).map((row) => `    ${row}`));
    }
    for (const w of r.warnings) lines.push(`  warning: ${w}`);
    if (r.error) lines.push(`  error: ${r.error}`);
  }
  const count = (s: TaskResult["status"]) => report.results.filter((r) => r.status === s).length;
  const parts = [
    count("failed") && `${count("failed")} failed`,
    count("skipped") && `${count("skipped")} skipped`,
    count("changed") && `${count("changed")} changed`,
    count("planned") && `${count("planned")} with planned changes`,
    count("unchanged") && `${count("unchanged")} unchanged`,
  ].filter(Boolean);
  for (const line of report.operations ?? []) lines.push(`operations: ${line}`);
  for (const u of report.unreachable ?? []) {
    lines.push(
      `unreachable: ${u.endpoint} did not answer ${u.call} within ${
        describeDuration(u.timeoutMs)
      } on any of ${u.attempts} attempts; later requests to it were not sent`,
    );
  }
  const total = Object.values(report.calls).reduce((a, b) => a + b, 0);
  lines.push(`result: ${parts.join(", ")}; ${total} API calls, ${report.writeCalls} writes`);
  return lines.join("\n");
}

/** Rows as text columns: the first column left-aligned, the others right-aligned. */
export function alignTable(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) =>
    row.map((value, i) => i === 0 ? value.padEnd(widths[i]) : value.padStart(widths[i])).join("  ")
      .trimEnd()
  );
}

export function renderJson(report: RunReport): string {
  return JSON.stringify(report, null, 2);
}
