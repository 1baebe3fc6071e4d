/**
 * What the generated bootstrap is built from: {@link BootstrapSpec}, the protocol's default
 * timings and runner download URL, the spec's validation ({@link specProblems}), and the names the
 * script exposes to tests and the host (its test-only overrides, its systemd unit).
 *
 * @module
 */

/** What the generated bootstrap needs to know. */
export interface BootstrapSpec {
  /** The pool's DynamoDB table. */
  table: string;
  /** The AWS region, signed into every AWS call. */
  region: string;
  /**
   * The label naming the pool on every registration (contract.ts `poolRunnerLabel`), besides the
   * run id label: lets the reaper prove a registration is this pool's.
   */
  poolLabel: string;
  /** https://github.com/<owner>/<repo> or https://github.com/<org>, or the GHES equivalent */
  githubUrl: string;
  /** Runner group to register in (organization runners); omitted: the default group. */
  runnerGroup?: string;
  runner: {
    /** actions/runner release, e.g. "2.323.0". */
    version: string;
    /** SHA-256 (hex) of the linux-x64 and linux-arm64 packages. */
    sha256: { x64: string; arm64: string };
    /** URL template with {version} and {arch} (x64 or arm64); default GitHub releases. */
    downloadUrl?: string;
  };
  /** The operator's setup script, run first as its own script (as root). */
  preRunnerScript?: string;
  /**
   * Who runs the runner and its jobs: "runner" (default), a dedicated user the bootstrap creates,
   * or "root" for images whose jobs need it (jobs can then reach instance metadata).
   */
  jobUser?: "runner" | "root";
  /**
   * Whether the runner user gets passwordless sudo (default true, as on GitHub-hosted runners).
   * A job with sudo can undo the metadata block; false is the strict mode.
   */
  jobSudo?: boolean;
  /**
   * "blocked" (default): a packet-filter rule keeps the runner user (so every job) from instance
   * metadata, hence from the instance role's credentials; "open" re-opens it for jobs that use
   * the instance role.
   */
  jobMetadata?: "blocked" | "open";
  /** protocol timings; defaults are PROTOCOL.md's; tests may shorten them */
  timings?: Partial<BootstrapTimings>;
}

/** The protocol's timings, in seconds. */
export interface BootstrapTimings {
  /** Heartbeat put period (whole seconds). */
  heartbeatSec: number;
  /** How often the instance checks its record's threshold for self-termination (whole seconds). */
  selfTerminateCheckSec: number;
  /** Poll period while waiting for a run id to register for. */
  claimPollSec: number;
  /** Poll period while a job runs, waiting for release. */
  jobPollSec: number;
}

/** PROTOCOL.md's timings. */
export const DEFAULT_TIMINGS: Readonly<BootstrapTimings> = {
  heartbeatSec: 5,
  selfTerminateCheckSec: 15,
  claimPollSec: 0.25,
  jobPollSec: 10,
};

/** Where the runner package comes from unless the spec says otherwise. */
export const DEFAULT_RUNNER_DOWNLOAD_URL =
  "https://github.com/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz";

/**
 * Environment variables the script reads, for tests only; on a real instance they are unset and
 * the defaults apply. (Its AWS client also honours AWS_ENDPOINT_URL, as AWS's own tools do.)
 */
export const BOOTSTRAP_TEST_OVERRIDES = {
  /**
   * Instance metadata base URL; default http://169.254.169.254. With "blocked" metadata, the
   * runner user is blocked from exactly this host (and port, when one is given).
   */
  imdsEndpoint: "REFRESH_IMDS_ENDPOINT",
  /** Working directory (setup script, runner package, runner install); default /opt/refresh. */
  dir: "REFRESH_BOOTSTRAP_DIR",
  /** Log file (the console gets the same lines); default /var/log/refresh-bootstrap.log. */
  logFile: "REFRESH_LOG_FILE",
  /**
   * "off": never use systemd, start in the background (setsid) as where systemd is not running;
   * "on": use `systemctl` (a test's stand-in) even where /run/systemd/system is missing.
   */
  systemd: "REFRESH_SYSTEMD",
  /** Where the unit file goes; default /etc/systemd/system. */
  systemdUnitDir: "REFRESH_SYSTEMD_UNIT_DIR",
  /** Name of the runner user instead of "runner" (with jobUser "runner"). */
  runnerUser: "REFRESH_RUNNER_USER",
  /** The sudoers file written for the runner user; default /etc/sudoers.d/90-refresh-runner. */
  sudoersFile: "REFRESH_SUDOERS_FILE",
  /**
   * Prefix of the system files the bootstrap reads and writes besides the sudoers file:
   * /etc/os-release, apt's configuration, cron's and at's deny lists, cron's spool and systemd's
   * linger files; default empty (the real ones).
   */
  systemRoot: "REFRESH_SYSTEM_ROOT",
  /**
   * A marker the harness puts in every process's environment: passed on to the runner, and,
   * when set, the only processes of the runner user the bootstrap kills at release are those
   * carrying it (instances of several tests share a machine and a runner user).
   */
  testMarker: "REFRESH_TEST_MARKER",
} as const;

/** Name of the systemd unit the bootstrap runs in where systemd is running. */
export const BOOTSTRAP_UNIT = "refresh-runner.service";

/** Every problem with a spec, each naming the field, the offending value and what is expected. */
export function specProblems(spec: BootstrapSpec): string[] {
  const problems: string[] = [];
  const check = (ok: boolean, message: string) => {
    if (!ok) problems.push(message);
  };
  check(
    /^[A-Za-z0-9_.-]{3,255}$/.test(spec.table),
    `table ${JSON.stringify(spec.table)} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)`,
  );
  check(
    /^[a-z]{2,4}(-[a-z]+)+-\d+$/.test(spec.region),
    `region ${JSON.stringify(spec.region)} is not an AWS region name (like us-east-1)`,
  );
  check(
    /^[A-Za-z0-9._-]{1,128}$/.test(spec.poolLabel ?? ""),
    `poolLabel ${
      JSON.stringify(spec.poolLabel)
    } is not a runner label (1-128 of A-Z a-z 0-9 . _ -)`,
  );
  check(
    spec.jobUser === undefined || spec.jobUser === "runner" || spec.jobUser === "root",
    `jobUser ${JSON.stringify(spec.jobUser)} is not "runner" or "root"`,
  );
  check(
    spec.jobMetadata === undefined || spec.jobMetadata === "blocked" ||
      spec.jobMetadata === "open",
    `jobMetadata ${JSON.stringify(spec.jobMetadata)} is not "blocked" or "open"`,
  );
  if (spec.jobUser === "root") {
    check(
      spec.jobMetadata === "open",
      "jobMetadata: jobs that run as root can always reach instance metadata (the bootstrap, also " +
        'root, needs it); with jobUser "root" set jobMetadata "open", or keep jobUser "runner"',
    );
    check(
      spec.jobSudo !== false,
      'jobSudo: false (strict mode) means nothing with jobUser "root"; keep jobUser "runner"',
    );
  }
  check(
    /^https?:\/\/[A-Za-z0-9.-]+(:\d+)?(\/[A-Za-z0-9_.-]+){1,2}$/.test(spec.githubUrl),
    `githubUrl ${JSON.stringify(spec.githubUrl)} is not https://<host>/<owner>[/<repo>]`,
  );
  if (spec.runnerGroup !== undefined) {
    check(
      spec.runnerGroup.length > 0 && spec.runnerGroup.length <= 100 &&
        [...spec.runnerGroup].every((c) => c >= " " && c !== "\x7f"),
      `runnerGroup ${JSON.stringify(spec.runnerGroup)} must be 1-100 printable characters`,
    );
  }
  check(
    /^\d+\.\d+\.\d+$/.test(spec.runner.version),
    `runner.version ${JSON.stringify(spec.runner.version)} is not an actions/runner version ` +
      "(like 2.323.0)",
  );
  for (const arch of ["x64", "arm64"] as const) {
    const sha = spec.runner.sha256[arch];
    check(
      /^[0-9a-fA-F]{64}$/.test(sha ?? ""),
      `runner.sha256.${arch} ${JSON.stringify(sha)} is not a SHA-256 (64 hex digits)`,
    );
  }
  const template = spec.runner.downloadUrl;
  if (template !== undefined) {
    check(
      /^https?:\/\/[^\s'"\\`$]+$/.test(template) && template.includes("{arch}"),
      `runner.downloadUrl ${JSON.stringify(template)} must be an http(s) URL with {arch} ` +
        "(and usually {version}) in it, without quotes, spaces, $ or backslashes",
    );
  }
  for (const [name, value] of Object.entries(spec.timings ?? {})) {
    if (value === undefined) continue;
    if (!(name in DEFAULT_TIMINGS)) {
      problems.push(
        `timings.${name} is not a timing (expected one of ${
          Object.keys(DEFAULT_TIMINGS).join(", ")
        })`,
      );
      continue;
    }
    const whole = name === "heartbeatSec" || name === "selfTerminateCheckSec";
    check(
      typeof value === "number" && Number.isFinite(value) && value > 0 && value <= 3600 &&
        (!whole || Number.isInteger(value)),
      `timings.${name} ${value} must be ${whole ? "a whole number of " : ""}seconds, ` +
        "more than 0 and at most 3600",
    );
  }
  return problems;
}
