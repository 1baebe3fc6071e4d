/**
 * Test context against moto: real SDK clients with call counting, a settable clock, a logger
 * that keeps its lines, the network the reset made, and a desired state naming it.
 */
import { CallCounter } from "../../lib/calls.ts";
import { type DesiredState, parseDesiredState } from "../../lib/config.ts";
import type { GithubRequestLimits } from "../../lib/github_token.ts";
import { type Budget, type Logger, runBudget, type TaskContext } from "../../lib/task.ts";
import { buildClients } from "../../refresh.ts";
import { AWS_ENV, type Network, resetMoto } from "./moto.ts";

// The SDK's default credential chain reads process.env.
for (const [k, v] of Object.entries(AWS_ENV)) Deno.env.set(k, v);

/**
 * Well-formed ids that exist in no account, for tests that only parse a desired state (or are
 * refused before any call). A test that runs a task takes its network from the reset instead.
 */
export const EXAMPLE_NETWORK: Network = {
  vpcId: "vpc-0e0e0e0e0e0e0e0e0",
  subnetIds: ["subnet-0e0e0e0e0e0e0e0e1", "subnet-0e0e0e0e0e0e0e0e2"],
  securityGroupId: "sg-0e0e0e0e0e0e0e0e0",
};

/**
 * The flags of a complete desired state for every task, naming the first subnet and the security
 * group of `network`; tests add or override flags after them.
 */
export function baseArgs(network: Network): string[] {
  return [
    "--region",
    "us-east-1",
    "--repo",
    "acme/widgets",
    "--ami",
    "ami-1e749f67",
    "--iam-instance-profile",
    "runner-profile",
    "--security-group-ids",
    network.securityGroupId,
    "--subnet-ids",
    network.subnetIds[0],
  ];
}

/** {@link baseArgs} on {@link EXAMPLE_NETWORK}: for tests that only parse. */
export const BASE_ARGS: string[] = baseArgs(EXAMPLE_NETWORK);

/**
 * Pins the generated bootstrap's runner: a released version and two made-up checksums, so no task
 * looks the checksums up in the release; the only GitHub read left is the pin's staleness check.
 */
export const PINNED_RUNNER_ARGS: readonly string[] = [
  "--runner-version",
  "2.334.0",
  "--runner-sha256-x64",
  "a".repeat(64),
  "--runner-sha256-arm64",
  "b".repeat(64),
];

/**
 * Launch template flags moto launches from (moto wants a root volume size; EC2 takes the image's)
 * with the runner pinned ({@link PINNED_RUNNER_ARGS}).
 */
export const TEMPLATE_ARGS: readonly string[] = [
  "--root-volume-size",
  "20",
  // A type fleet-actions' provision's default allowed-instance-types (c*, m*, r*) claims, with
  // the large class's 2 vCPUs: moto launches the template's type where EC2 would pick one.
  "--instance-type",
  "m5.large",
  ...PINNED_RUNNER_ARGS,
];

/** A PAT-shaped secret used as the GitHub credential in tests. */
export const TEST_PAT = "ghp_TestPersonalAccessToken0123456789abcd";

/** Parses flags (on top of {@link baseArgs} of `network`) the way the entry does; throws on a ConfigError. */
export function desiredFrom(
  args: string[],
  env: Record<string, string> = { GITHUB_TOKEN: TEST_PAT },
  files: Record<string, string> = {},
  network: Network = EXAMPLE_NETWORK,
): DesiredState {
  return parseOwn([...baseArgs(network), ...args], env, files);
}

function parseOwn(
  args: string[],
  env: Record<string, string>,
  files: Record<string, string>,
): DesiredState {
  const desired = parseDesiredState({
    args,
    env,
    readTextFile: (path) => {
      if (path in files) return files[path];
      throw new Deno.errors.NotFound(`no such file: ${path}`);
    },
  });
  if (desired === "help") throw new Error("unexpected help");
  return desired;
}

export interface TestContext extends TaskContext<DesiredState> {
  /** The network of this account (made by the reset). */
  network: Network;
  /** {@link desiredFrom} on this context's network, for {@link withDesired}. */
  desiredFrom(
    args: string[],
    env?: Record<string, string>,
    files?: Record<string, string>,
  ): DesiredState;
  counter: CallCounter;
  lines: string[];
  secrets: string[];
  /** Moves the clock. */
  setNow(date: Date | string): void;
}

export interface TestContextOptions {
  /** Environment the desired state is parsed from (default: a GitHub token). */
  env?: Record<string, string>;
  /** Files the desired state may name (`--user-data`, `--config`). */
  files?: Record<string, string>;
  /** `args` are the whole command line, without {@link baseArgs}. */
  ownArgs?: boolean;
  now?: string;
  budget?: Budget;
  /** Request timeout and GitHub retry delays (default: the entry's). */
  limits?: GithubRequestLimits;
}

/**
 * A task context on a freshly reset moto account: the desired state is `args` (or what it returns
 * for the network) on top of {@link baseArgs} of the network the reset made.
 */
export async function testContext(
  args: string[] | ((network: Network) => string[]) = [],
  options: TestContextOptions = {},
): Promise<TestContext> {
  const network = await resetMoto();
  if (typeof args === "function") args = args(network);
  const env = options.env ?? { GITHUB_TOKEN: TEST_PAT };
  const files = options.files ?? {};
  const desired = options.ownArgs
    ? parseOwn(args, env, files)
    : desiredFrom(args, env, files, network);
  return contextOn(desired, network, options);
}

/**
 * A task context for `desired` on an account that already holds `network`, without a reset;
 * `clientEnv` points the clients elsewhere (another moto, say).
 */
export function contextOn(
  desired: DesiredState,
  network: Network,
  options: {
    now?: string;
    budget?: Budget;
    limits?: GithubRequestLimits;
    clientEnv?: Record<string, string>;
  } = {},
): TestContext {
  const counter = new CallCounter();
  const clients = buildClients(
    desired,
    { ...AWS_ENV, ...options.clientEnv },
    counter,
    options.limits,
  );
  const lines: string[] = [];
  const secrets: string[] = [];
  let now = new Date(options.now ?? "2026-01-15T12:00:00Z");
  const log: Logger = {
    info: (m) => lines.push(m),
    warn: (m) => lines.push(`warning: ${m}`),
  };
  const ctx: TestContext = {
    desired,
    network,
    desiredFrom: (args, env, files) => desiredFrom(args, env, files, network),
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
