/**
 * Test context against moto: real SDK clients with call counting, a settable clock, a logger
 * that keeps its lines, and a parsed desired state.
 */
import { CallCounter } from "../../lib/calls.ts";
import { type DesiredState, parseDesiredState } from "../../lib/config.ts";
import type { GithubRequestLimits } from "../../lib/github_token.ts";
import { type Budget, type Logger, runBudget, type TaskContext } from "../../lib/task.ts";
import { buildClients } from "../../refresh.ts";
import { AWS_ENV, NETWORK, resetMoto } from "./moto.ts";

// The SDK's default credential chain reads process.env.
for (const [k, v] of Object.entries(AWS_ENV)) Deno.env.set(k, v);

/**
 * A complete desired state for every task, naming the network {@link resetMoto} makes; tests add
 * or override flags after it.
 */
export const BASE_ARGS = [
  "--region",
  "us-east-1",
  "--repo",
  "acme/widgets",
  "--ami",
  "ami-1e749f67",
  "--iam-instance-profile",
  "runner-profile",
  "--security-group-ids",
  NETWORK.securityGroupId,
  "--subnet-ids",
  NETWORK.subnetIds[0],
];

/** A PAT-shaped secret used as the GitHub credential in tests. */
export const TEST_PAT = "ghp_TestPersonalAccessToken0123456789abcd";

/** Parses flags the way the entry does, failing the test on a ConfigError. */
export function desiredFrom(
  args: string[],
  env: Record<string, string> = { GITHUB_TOKEN: TEST_PAT },
  files: Record<string, string> = {},
): DesiredState {
  const desired = parseDesiredState({
    args: [...BASE_ARGS, ...args],
    env,
    readTextFile: (path) => {
      if (path in files) return files[path];
      throw new Deno.errors.NotFound(`no such file: ${path}`);
    },
  });
  if (desired === "help") throw new Error("unexpected help");
  return desired;
}

export interface TestContext extends TaskContext {
  counter: CallCounter;
  lines: string[];
  secrets: string[];
  /** Moves the clock. */
  setNow(date: Date | string): void;
}

/** A task context on moto (reset first unless `reset: false`). */
export async function testContext(
  desired: DesiredState,
  options: {
    now?: string;
    reset?: boolean;
    env?: Record<string, string>;
    budget?: Budget;
    /** Request timeout and GitHub retry delays (default: the entry's). */
    limits?: GithubRequestLimits;
  } = {},
): Promise<TestContext> {
  if (options.reset !== false) await resetMoto();
  const counter = new CallCounter();
  const clients = buildClients(desired, { ...AWS_ENV, ...options.env }, counter, options.limits);
  const lines: string[] = [];
  const secrets: string[] = [];
  let now = new Date(options.now ?? "2026-01-15T12:00:00Z");
  const log: Logger = {
    info: (m) => lines.push(m),
    warn: (m) => lines.push(`warning: ${m}`),
  };
  const ctx: TestContext = {
    desired,
    clients,
    now: () => now,
    log,
    dryRun: desired.dryRun,
    secret: (v) => secrets.push(v),
    // Generous: a test that is about the deadline passes its own.
    budget: options.budget ?? runBudget(10 * 60_000),
    counter,
    lines,
    secrets,
    setNow: (d) => {
      now = new Date(d);
    },
  };
  return ctx;
}

/** Copies a context with another desired state, keeping clients, clock and counter. */
export function withDesired(ctx: TestContext, desired: DesiredState): TestContext {
  return { ...ctx, desired, dryRun: desired.dryRun };
}
