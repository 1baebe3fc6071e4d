/**
 * The `github-token` task: keeps a valid runner registration token in the metadata record
 * `ID#gh_registration_token` (`{ token, timestamp, expires_at }`) for new instances to register
 * with. It asks GitHub for a new token only when none is stored, the stored one has expired, or it
 * expires within the margin, so a run every few minutes makes about one GitHub call an hour.
 *
 * It also holds the options the entry builds its Octokit with: retries, rate-limit handling, and a
 * personal access token or a GitHub App (JWT, then installation token) as credential. No credential
 * or token ever appears in what it returns or throws.
 *
 * @module
 */
import { createAppAuth, type StrategyOptions } from "npm:@octokit/auth-app@8.3.1";
import type { Octokit } from "npm:@octokit/rest@22.0.1";
import { METADATA, type RegistrationTokenRecord, timestamp } from "./contract.ts";
import type { InputSpec, Names, Reader, Requirements } from "./inputs.ts";
import { readStored, writeMetadata } from "./metadata.ts";
import { timedFetch } from "./requests.ts";
import type { Change, SharedDesired, TaskContext as Context, TaskOutcome } from "./task.ts";

/** The github-token task's inputs (GitHub's, also used by the reaper), in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "github-api-url",
    env: ["GITHUB_API_URL"],
    ambient: true,
    kind: "string",
    default: "https://api.github.com",
    help: "GitHub REST API base URL (GitHub Enterprise Server: https://HOST/api/v3)",
  },
  {
    name: "token-margin-min",
    env: ["REFRESH_TOKEN_MARGIN_MIN"],
    kind: "int",
    default: "30",
    help: "fetch a new registration token when the stored one expires within this many minutes",
  },
  {
    name: "github-app-id",
    env: ["GITHUB_APP_ID"],
    kind: "string",
    help: "GitHub App id (App auth; with GITHUB_APP_PRIVATE_KEY)",
  },
  {
    name: "github-app-installation-id",
    env: ["GITHUB_APP_INSTALLATION_ID"],
    kind: "string",
    help: "installation id of the App (found from the repository/organization when omitted)",
  },
  {
    name: "github-token",
    env: ["GITHUB_TOKEN"],
    kind: "string",
    secret: true,
    help: "personal access token (environment only)",
  },
  {
    name: "github-app-private-key",
    env: ["GITHUB_APP_PRIVATE_KEY"],
    kind: "string",
    secret: true,
    help: "PEM private key of the GitHub App (environment only)",
  },
];

/** What the github-token task cannot run without. */
export const REQUIRED: Requirements = ["repo|org", "github-token|github-app-id"];

export type GithubAuth =
  | { kind: "token"; token: string }
  | { kind: "app"; appId: string; privateKey: string; installationId?: string }
  | { kind: "none" };

/** GitHub's section of the desired state (the github-token task's; the reaper uses it too). */
export interface DesiredGithub {
  apiUrl: string;
  scope?: { repo: { owner: string; name: string } } | { org: string };
  auth: GithubAuth;
  marginMin: number;
}

/** The part of the desired state the github-token task reads. */
export interface GithubDesired extends Pick<SharedDesired, "table"> {
  github: DesiredGithub;
}
type TaskContext = Context<GithubDesired>;

/** Reads the github-token task's inputs, recording problems on the reader. */
export function parseGithub(r: Reader, { repo, org }: Names): DesiredGithub {
  const problems = r.problems;
  const apiUrl = (r.string("github-api-url") ?? "https://api.github.com").replace(/\/+$/, "");
  try {
    const u = new URL(apiUrl);
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error("not http(s)");
  } catch {
    problems.push(`github-api-url: "${apiUrl}" is not an http(s) URL`);
  }
  const marginMin = r.int("token-margin-min", 0, 59);
  const token = r.raw["github-token"] as string | undefined;
  const appId = r.string("github-app-id");
  const installationId = r.string("github-app-installation-id");
  const privateKey = r.raw["github-app-private-key"] as string | undefined;
  let auth: GithubAuth = { kind: "none" };
  if (appId !== undefined) {
    if (!/^\d+$/.test(appId)) problems.push(`github-app-id: "${appId}" is not a numeric App id`);
    if (installationId !== undefined && !/^\d+$/.test(installationId)) {
      problems.push(`github-app-installation-id: "${installationId}" is not a numeric id`);
    }
    if (privateKey === undefined) {
      problems.push(
        "github-app-private-key: required with github-app-id; set GITHUB_APP_PRIVATE_KEY",
      );
    } else if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(privateKey)) {
      problems.push("github-app-private-key: GITHUB_APP_PRIVATE_KEY is not a PEM private key");
    }
    auth = { kind: "app", appId, privateKey: privateKey ?? "", installationId };
  } else if (privateKey !== undefined || installationId !== undefined) {
    // Without it the App settings would be ignored, silently, maybe for a PAT also set.
    const given = privateKey !== undefined
      ? "GITHUB_APP_PRIVATE_KEY"
      : "github-app-installation-id";
    problems.push(`github-app-id: required with ${given}; set --github-app-id or GITHUB_APP_ID`);
  } else if (token !== undefined) {
    auth = { kind: "token", token };
  }
  return {
    apiUrl,
    // --org registers at organization level; names still come from the repository when given.
    scope: org ? { org } : repo ? { repo } : undefined,
    auth,
    marginMin: marginMin!,
  };
}

type Github = DesiredGithub;
type Scope = NonNullable<Github["scope"]>;
type OctokitOptions = NonNullable<ConstructorParameters<typeof Octokit>[0]>;

/** A rate limit is waited out only when it lifts within this many seconds, at most this often. */
const RATE_LIMIT_MAX_WAIT_SEC = 120;
const RATE_LIMIT_RETRIES = 2;

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** How the entry bounds GitHub requests (tests shorten the retry delays). */
export interface GithubRequestLimits {
  /** Each attempt of a request is abandoned after this long. */
  timeoutMs: number;
  /** plugin-retry waits (n²) times this before the n-th retry (default its 1000 ms). */
  retryBaseMs?: number;
}

/**
 * The options of the Octokit the entry builds (with `@octokit/plugin-retry` and
 * `@octokit/plugin-throttling`), or undefined when no credential was given. Octokit logs nothing:
 * what matters reaches the report through the tasks' results. Every request (App authentication
 * included, which goes through the same `request` defaults) gets the timeout of `limits`.
 */
export function githubClientOptions(
  github: Github,
  limits: GithubRequestLimits,
): OctokitOptions | undefined {
  const { auth, apiUrl, scope } = github;
  if (auth.kind === "none") return undefined;
  const waitBriefly = (
    retryAfterSec: number,
    _options: unknown,
    _octokit: unknown,
    retry: number,
  ) => retry < RATE_LIMIT_RETRIES && retryAfterSec <= RATE_LIMIT_MAX_WAIT_SEC;
  const common: OctokitOptions = {
    baseUrl: apiUrl,
    userAgent: "refresh",
    log: silent,
    // Rate limits (403/429) belong to the throttling plugin; retry takes 5xx and network errors.
    retry: {
      doNotRetry: [400, 401, 403, 404, 410, 422, 429, 451],
      ...(limits.retryBaseMs !== undefined ? { retryAfterBaseValue: limits.retryBaseMs } : {}),
    },
    request: { fetch: timedFetch(limits.timeoutMs) },
    throttle: { onRateLimit: waitBriefly, onSecondaryRateLimit: waitBriefly },
  };
  if (auth.kind === "token") return { ...common, auth: auth.token };
  return {
    ...common,
    authStrategy: createAppInstallationAuth,
    auth: {
      appId: auth.appId,
      privateKey: auth.privateKey,
      ...(auth.installationId ? { installationId: auth.installationId } : {}),
      installationRoute: scope && "org" in scope
        ? { route: "GET /orgs/{org}/installation", parameters: { org: scope.org } }
        : {
          route: "GET /repos/{owner}/{repo}/installation",
          parameters: { owner: scope?.repo.owner, repo: scope?.repo.name },
        },
    },
  };
}

type AppAuth = ReturnType<typeof createAppAuth>;
type Hook = AppAuth["hook"];

/**
 * `@octokit/auth-app`, finding the App's installation on the repository or organization (with the
 * App's JWT) the first time an installation token is needed, when no installation id was given.
 */
function createAppInstallationAuth(
  options: StrategyOptions & {
    installationRoute: { route: string; parameters: Record<string, unknown> };
  },
) {
  const { installationRoute, ...appOptions } = options;
  const app = createAppAuth(appOptions);
  if (appOptions.installationId) return app;
  let installed: Promise<AppAuth> | undefined;
  const install = () =>
    installed ??= appOptions.request!(installationRoute.route, installationRoute.parameters)
      .then(({ data }) => createAppAuth({ ...appOptions, installationId: data.id }))
      .catch((error) => {
        installed = undefined;
        throw error;
      });
  // deno-lint-ignore no-explicit-any
  const auth = async (authOptions: any) =>
    authOptions?.type === "installation" && !authOptions.installationId
      ? (await install())(authOptions)
      : app(authOptions);
  const hook: Hook = async (request, route, parameters) => {
    const { url } = request.endpoint.merge(route as string, parameters);
    // The look-up itself is signed with the JWT; everything else needs the installation.
    if (/\/installation(\?|$)/.test(url ?? "")) return app.hook(request, route, parameters);
    return (await install()).hook(request, route, parameters);
  };
  return Object.assign(auth, { hook });
}

/** What the stored record says, and why a new token is (or is not) needed. */
interface Assessment {
  status: "missing" | "unreadable" | "expired" | "expiring" | "fresh";
  reason: string;
  expiresAt?: string;
  minutesLeft?: number;
}

function assess(stored: unknown, now: Date, marginMin: number): Assessment {
  if (stored === undefined || stored === null) {
    return { status: "missing", reason: "no token is stored" };
  }
  const record = stored as Partial<RegistrationTokenRecord>;
  const expires = typeof record.expires_at === "string" ? Date.parse(record.expires_at) : NaN;
  if (typeof record.token !== "string" || record.token === "" || Number.isNaN(expires)) {
    return {
      status: "unreadable",
      reason: "the stored record is not { token, timestamp, expires_at } with a valid expires_at",
    };
  }
  const expiresAt = timestamp(new Date(expires));
  const minutesLeft = Math.floor((expires - now.getTime()) / 60_000);
  if (expires <= now.getTime()) {
    return { status: "expired", reason: `the stored token expired at ${expiresAt}`, expiresAt };
  }
  if (expires - now.getTime() <= marginMin * 60_000) {
    return {
      status: "expiring",
      reason:
        `the stored token expires at ${expiresAt}, within the ${marginMin} min margin (${minutesLeft} min left)`,
      expiresAt,
      minutesLeft,
    };
  }
  return { status: "fresh", reason: "", expiresAt, minutesLeft };
}

/** Keeps a registration token that is valid for longer than the margin in the table. */
export async function reconcileGithubToken(ctx: TaskContext): Promise<TaskOutcome> {
  const { scope, marginMin } = ctx.desired.github;
  if (!scope) {
    throw new Error("no repository or organization to register runners with: set --repo or --org");
  }
  const where = describeScope(scope);
  const now = ctx.now();
  const stored = await readStored(ctx, METADATA.registrationToken);
  const storedToken = (stored as Partial<RegistrationTokenRecord> | undefined)?.token;
  if (typeof storedToken === "string" && storedToken) ctx.secret(storedToken);

  const state = assess(stored, now, marginMin);
  const found = {
    scope: where,
    credential: describeCredential(ctx.desired.github),
    token: state.status,
    ...(state.expiresAt ? { expiresAt: state.expiresAt } : {}),
    ...(state.minutesLeft !== undefined ? { minutesLeft: state.minutesLeft } : {}),
  };
  if (state.status === "fresh") {
    return {
      summary:
        `registration token for ${where} valid until ${state.expiresAt} (${state.minutesLeft} min left)`,
      found,
      changes: [],
    };
  }
  const fetch: Change = {
    action: "fetch",
    target: `registration token for ${where}`,
    detail: state.reason,
  };
  const target = `metadata ${METADATA.registrationToken}`;
  if (ctx.dryRun) {
    return {
      summary: `would fetch a new registration token for ${where}: ${state.reason}`,
      found,
      changes: [fetch, { action: "write", target, detail: "the new token and its expiry" }],
    };
  }

  const fetched = await fetchRegistrationToken(ctx, scope);
  const record: RegistrationTokenRecord = {
    token: fetched.token,
    timestamp: timestamp(now),
    expires_at: fetched.expiresAt,
  };
  const write = await writeMetadata(
    ctx,
    METADATA.registrationToken,
    record,
    `token expiring at ${record.expires_at}`,
  );
  ctx.log.info(`github-token: stored a new registration token expiring at ${record.expires_at}`);
  return {
    summary:
      `fetched a new registration token for ${where}, valid until ${record.expires_at} (${state.reason})`,
    found,
    changes: [fetch, write],
  };
}

/** Asks GitHub for a registration token; every token seen on the way is registered as secret. */
async function fetchRegistrationToken(
  ctx: TaskContext,
  scope: Scope,
): Promise<{ token: string; expiresAt: string }> {
  const github = ctx.clients.github;
  if (!github) {
    throw new Error(
      "no GitHub credential: set GITHUB_TOKEN, or GITHUB_APP_ID with GITHUB_APP_PRIVATE_KEY",
    );
  }
  let data: { token?: unknown; expires_at?: unknown };
  try {
    if (ctx.desired.github.auth.kind === "app") {
      // JWT, installation (looked up when its id is not given), installation token.
      const installation = await github.auth({ type: "installation" }) as { token: string };
      ctx.secret(installation.token);
    }
    const response = "org" in scope
      ? await github.rest.actions.createRegistrationTokenForOrg({ org: scope.org })
      : await github.rest.actions.createRegistrationTokenForRepo({
        owner: scope.repo.owner,
        repo: scope.repo.name,
      });
    data = response.data;
  } catch (error) {
    throw new Error(explainFailure(error, ctx.desired.github, scope));
  }
  if (typeof data.token !== "string" || data.token === "") {
    throw new Error(`GitHub answered without a registration token for ${describeScope(scope)}`);
  }
  ctx.secret(data.token);
  const expires = typeof data.expires_at === "string" ? Date.parse(data.expires_at) : NaN;
  if (Number.isNaN(expires)) {
    throw new Error(
      `GitHub answered with an unreadable expires_at ${
        JSON.stringify(data.expires_at)
      }, expected an ISO-8601 time`,
    );
  }
  return { token: data.token, expiresAt: timestamp(new Date(expires)) };
}

function describeScope(scope: Scope): string {
  return "org" in scope
    ? `organization ${scope.org}`
    : `repository ${scope.repo.owner}/${scope.repo.name}`;
}

function describeCredential(github: Github): string {
  const { auth } = github;
  if (auth.kind === "token") return "personal access token (GITHUB_TOKEN)";
  if (auth.kind === "app") {
    return `GitHub App ${auth.appId}, installation ${auth.installationId ?? "looked up"}`;
  }
  return "none";
}

/** The permission creating a registration token needs, per kind of credential. */
function neededPermission(github: Github, scope: Scope): string {
  const org = "org" in scope;
  const permission = org
    ? `the organization permission "Self-hosted runners: Read and write"`
    : `the repository permission "Administration: Read and write"`;
  if (github.auth.kind === "app") {
    return `the GitHub App ${github.auth.appId} needs ${permission}, accepted on its installation`;
  }
  return `a classic PAT needs the scope "${org ? "admin:org" : "repo"}", a fine-grained PAT ` +
    `${permission}, and its owner must be an admin of the ${org ? "organization" : "repository"}`;
}

/**
 * Why a GitHub request failed, in words: the request, GitHub's status and message, and the likely
 * cause. Built from the status and URL only, never from the request's headers.
 */
function explainFailure(error: unknown, github: Github, scope: Scope): string {
  const where = describeScope(scope);
  const failure = error as {
    status?: number;
    message?: string;
    request?: { method?: string; url?: string };
    response?: { headers?: Record<string, string | undefined>; data?: unknown };
  };
  if (typeof failure.status !== "number" || !failure.request) {
    const message = error instanceof Error ? error.message : String(error);
    return github.auth.kind === "app"
      ? `cannot authenticate as GitHub App ${github.auth.appId}: ${message}; ` +
        "check that GITHUB_APP_PRIVATE_KEY is the App's PEM private key"
      : `cannot get a registration token for ${where}: ${message}`;
  }
  const { status, request, response } = failure;
  const url = request.url ?? "";
  const path =
    (url.startsWith(github.apiUrl) ? url.slice(github.apiUrl.length) : url).split("?")[0];
  if (!response) {
    return `cannot reach GitHub at ${github.apiUrl} (${request.method} ${path}): ` +
      `${failure.message}; check --github-api-url and the network`;
  }
  const said = (response?.data as { message?: unknown } | undefined)?.message;
  const head = `GitHub answered ${status} to ${request.method} ${path}` +
    (typeof said === "string" && said ? ` ("${said.slice(0, 200)}")` : "");
  const app = github.auth.kind === "app" ? github.auth : undefined;
  const jwtRequest = /^\/app\/|\/installation$/.test(path);
  const headers = response?.headers ?? {};

  if (
    (status === 403 || status === 429) && (headers["x-ratelimit-remaining"] === "0" ||
      /rate limit/i.test(String(said)))
  ) {
    const reset = Number(headers["x-ratelimit-reset"]);
    const until = reset > 0 ? ` until ${timestamp(new Date(reset * 1000))}` : "";
    return `${head}: the API rate limit of this credential is exhausted${until}; ` +
      "the next run tries again";
  }
  if (status === 401) {
    if (app && jwtRequest) {
      return `${head}: GitHub rejected the App's JWT; check that GITHUB_APP_ID (${app.appId}) ` +
        "is the App's id, that GITHUB_APP_PRIVATE_KEY is one of its current private keys, and " +
        "that this machine's clock is right";
    }
    if (app) return `${head}: GitHub rejected the App's installation token`;
    return `${head}: the personal access token in GITHUB_TOKEN is invalid, expired or revoked`;
  }
  if (status === 403) {
    return `${head}: the credential lacks the permission to create runner registration ` +
      `tokens for ${where}; ${neededPermission(github, scope)}`;
  }
  if (status === 404) {
    if (app && /\/installation$/.test(path)) {
      return `${head}: the GitHub App ${app.appId} is not installed on ${where}; install it ` +
        "there, or set --github-app-installation-id";
    }
    if (app && jwtRequest) {
      return `${head}: installation ${app.installationId} of the GitHub App ${app.appId} does ` +
        "not exist; check --github-app-installation-id";
    }
    return `${head}: ${where} does not exist at ${github.apiUrl}, or the credential cannot see ` +
      `it${app ? " (the App's installation does not include it)" : ""}; check ${
        "org" in scope ? "--org" : "--repo"
      } and --github-api-url, and that ${neededPermission(github, scope)}`;
  }
  return `${head}: cannot get a registration token for ${where}`;
}
