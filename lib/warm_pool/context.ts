/**
 * What the warm pool's modules share: the part of the desired state they read, their context and
 * the run's progress. Types only.
 *
 * @module
 */
import type { ResourceClass } from "../resource_pools.ts";
import type { Change, SharedDesired, TaskContext } from "../task.ts";
import type { DesiredWarmPool } from "./inputs.ts";

/** The part of the desired state the warm pool reads (a structural part of `DesiredState`). */
export interface WarmPoolDesired extends SharedDesired {
  warmPool: DesiredWarmPool;
  launchTemplate: { name: string };
  pools: { classes: Record<string, ResourceClass> };
  reaper: { rollout: { bootGraceMin: number } };
}

export type WarmContext = TaskContext<WarmPoolDesired>;

/** What a run has done, warned about and failed at so far. */
export interface Progress {
  changes: Change[];
  warnings: string[];
  errors: string[];
}
