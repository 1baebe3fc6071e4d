/**
 * GitHub Actions output, as pure functions returning strings: workflow commands (`::add-mask::`,
 * `::group::`, `::error::`, `::warning::`) and the job summary markdown for
 * `$GITHUB_STEP_SUMMARY`. Nothing here prints or writes; the entry emits the strings when
 * `GITHUB_ACTIONS=true`.
 *
 * @module
 */
import type { RunReport } from "./report.ts";
import { isPoolView, poolTable, templateLine } from "./rollout.ts";
import type { TaskResult } from "./task.ts";
import { isWarmView, warmLine, warmTable } from "./warm_pool.ts";

/** Escapes a workflow command's message (what follows the second `::`). */
export function escapeData(text: string): string {
  return text.replaceAll("%", "%25").replaceAll("\r", "%0D").replaceAll("\n", "%0A");
}

/** Escapes a workflow command property value (`title=…`). */
export function escapeProperty(text: string): string {
  return escapeData(text).replaceAll(":", "%3A").replaceAll(",", "%2C");
}

/** Tells the runner to replace `value` with `***` in every later log line. */
export function addMask(value: string): string {
  return `::add-mask::${escapeData(value)}`;
}

/** Opens a collapsible group of log lines. */
export function group(title: string): string {
  return `::group::${escapeData(title)}`;
}

export function endGroup(): string {
  return "::endgroup::";
}

/** An annotation shown on the run's page (`error` or `warning`), with a title. */
export function annotation(level: "error" | "warning", title: string, message: string): string {
  return `::${level} title=${escapeProperty(title)}::${escapeData(message)}`;
}

/** One annotation per failed task and per warning, in task order. */
export function annotations(report: RunReport): string[] {
  const out: string[] = [];
  for (const r of report.results) {
    if (r.error) out.push(annotation("error", `refresh ${r.task} ${r.status}`, r.error));
    for (const w of r.warnings) out.push(annotation("warning", `refresh ${r.task}`, w));
  }
  return out;
}

const STATUS: Record<TaskResult["status"], string> = {
  unchanged: "✅ no changes",
  changed: "🔧 changed",
  planned: "📝 would change",
  failed: "❌ failed",
  skipped: "⏭️ skipped (deadline)",
};

/** Whether a skipped task was skipped at the run's deadline (else: its endpoint did not answer). */
function isDeadlineSkip(r: TaskResult): boolean {
  return r.error?.startsWith("not started: the run's") ?? true;
}

/** Changes listed in a table cell before the rest is only counted. */
const CELL_CHANGES = 5;

/**
 * The job summary: a heading with the overall result, one table row per task (status, what it
 * found, what it changed), then every change, warning and error in full.
 */
export function jobSummary(report: RunReport): string {
  const failed = report.results.filter((r) => r.status === "failed").length;
  const skipped = report.results.filter((r) => r.status === "skipped").length;
  const changes = report.results.reduce((n, r) => n + r.changes.length, 0);
  const outcome = failed || skipped
    ? `❌ ${
      [
        failed && `${failed} of ${report.results.length} tasks failed`,
        skipped &&
        `${skipped} of ${report.results.length} tasks skipped (${
          report.unreachable?.length
            ? `${report.unreachable.map((u) => u.endpoint).join(", ")} did not answer`
            : "the run's deadline passed"
        })`,
      ].filter(Boolean).join(", ")
    }`
    : changes === 0
    ? "✅ no changes"
    : report.dryRun
    ? `📝 ${changes} changes planned (dry run, nothing written)`
    : `🔧 ${changes} changes made`;
  const verb = (action: string) => report.dryRun ? `would ${action}` : action;
  const lines = [
    `## refresh: ${outcome}`,
    "",
    `Region \`${report.region}\`, table \`${report.table}\`.`,
    "",
    "| Task | Status | Found | Changes |",
    "| --- | --- | --- | --- |",
  ];
  for (const r of report.results) {
    const shown = r.changes.slice(0, CELL_CHANGES).map((c) => `${verb(c.action)} ${c.target}`);
    if (r.changes.length > CELL_CHANGES) shown.push(`… ${r.changes.length - CELL_CHANGES} more`);
    // The pool view gets a table of its own below.
    const { pool: _pool, warm: _warm, ...rest } = r.found;
    const found = describeFound(
      isPoolView(r.found.pool) || isWarmView(r.found.warm) ? rest : r.found,
    );
    lines.push(
      `| ${
        [
          [r.task],
          [
            r.status === "skipped" && !isDeadlineSkip(r)
              ? "⏭️ skipped (no answer)"
              : STATUS[r.status],
          ],
          found.length ? found : [r.summary],
          shown.length ? shown : ["none"],
        ].map(cell).join(" | ")
      } |`,
    );
  }
  for (const r of report.results) {
    const pool = r.found.pool;
    if (!isPoolView(pool) || Object.keys(pool.classes).length === 0) continue;
    const [header, ...rows] = poolTable(pool);
    lines.push(
      "",
      `### Pool (${r.task})`,
      "",
      `Against the ${templateLine(pool)}.`,
      "",
      `| ${header.map(text).join(" | ")} |`,
      `| ${header.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
      ...rows.map((row) => `| ${row.map((v) => cell([v])).join(" | ")} |`),
    );
  }
  for (const r of report.results) {
    const warm = r.found.warm;
    if (!isWarmView(warm) || Object.keys(warm.classes).length === 0) continue;
    const [header, ...rows] = warmTable(warm);
    lines.push(
      "",
      `### Warm pool (${r.task})`,
      "",
      `${warmLine(warm)[0].toUpperCase()}${warmLine(warm).slice(1)}.`,
      "",
      `| ${header.map(text).join(" | ")} |`,
      `| ${header.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
      ...rows.map((row) => `| ${row.map((v) => cell([v])).join(" | ")} |`),
    );
  }
  if (report.operations?.length) {
    // The lease, metrics, alarm and dashboard: the dashboard's line carries its link.
    lines.push("", "### Operations", "", ...report.operations.map((o) => `- ${text(o)}`));
  }
  const details: string[] = [];
  for (const r of report.results) {
    for (const c of r.changes) {
      details.push(`- ${r.task}: ${verb(c.action)} ${c.target}${c.detail ? `: ${c.detail}` : ""}`);
    }
    for (const w of r.warnings) details.push(`- ${r.task}: ⚠️ ${w}`);
    if (r.error) details.push(`- ${r.task}: ❌ ${r.error}`);
  }
  if (details.length) {
    lines.push(
      "",
      "<details><summary>Details</summary>",
      "",
      ...details.map(text),
      "",
      "</details>",
    );
  }
  const total = Object.values(report.calls).reduce((a, b) => a + b, 0);
  lines.push("", `${total} API calls, ${report.writeCalls} writes. Exit code ${report.exitCode}.`);
  return lines.join("\n") + "\n";
}

/** The job summary when the desired state was invalid and nothing ran. */
export function configErrorSummary(problems: string[]): string {
  return [
    "## refresh: ❌ invalid desired state, nothing was called",
    "",
    ...problems.map((p) => `- ${text(p)}`),
    "",
    "Exit code 2.",
  ].join("\n") + "\n";
}

/**
 * The scalar values of a task's `found`, as `key: value` lines (null as `none`); nested objects
 * are flattened to dotted keys and arrays are counted, so any task's counts show without knowing
 * their names.
 */
export function describeFound(found: Record<string, unknown>, prefix = ""): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(found)) {
    const name = `${prefix}${key}`;
    if (value === undefined) continue;
    if (value === null) out.push(`${name}: none`);
    else if (Array.isArray(value)) out.push(`${name}: ${value.length}`);
    else if (typeof value === "object") {
      out.push(...describeFound(value as Record<string, unknown>, `${name}.`));
    } else out.push(`${name}: ${String(value)}`);
  }
  return out;
}

/** Text safe inside markdown: no HTML, no line breaks. */
function text(value: string): string {
  return value.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replace(/\r?\n/g, " ");
}

/** Lines as one table cell. */
function cell(lines: string[]): string {
  return lines.map(text).join("<br>").replaceAll("|", "\\|");
}
