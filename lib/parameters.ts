/**
 * Reconciles the operational parameters provision and release read from the table:
 * `idle_time_sec`, `max_runtime_min` and `subnet_ids`, each written only when it differs.
 *
 * @module
 */
import { METADATA } from "./contract.ts";
import { reconcileMetadata } from "./metadata.ts";
import type { Change, TaskContext, TaskOutcome } from "./task.ts";

export async function reconcileParameters(ctx: TaskContext): Promise<TaskOutcome> {
  const { idleTimeSec, maxRuntimeMin, subnetIds } = ctx.desired.parameters;
  const desired: [string, unknown][] = [
    [METADATA.idleTimeSec, idleTimeSec],
    [METADATA.maxRuntimeMin, maxRuntimeMin],
    [METADATA.subnetIds, subnetIds],
  ];
  const found: Record<string, unknown> = {};
  const changes: Change[] = [];
  for (const [id, value] of desired) {
    const { stored, change } = await reconcileMetadata(ctx, id, value);
    found[id] = stored ?? null;
    if (change) changes.push(change);
  }
  return {
    summary: changes.length === 0
      ? "all parameters match"
      : `${changes.length} of ${desired.length} parameters ${ctx.dryRun ? "would be " : ""}written`,
    found,
    changes,
  };
}
