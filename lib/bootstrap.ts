/**
 * Generates the instance bootstrap: the bash user data that makes an EC2 instance take part in the
 * pool by keeping the instance protocol (shared/PROTOCOL.md) with fleet-actions' `provision` and
 * `release`, which talk to it only through the DynamoDB table. On the instance it writes only: its
 * own heartbeat and worker signal items, TerminateInstances of itself, and locally the runner's
 * user, sudoers file, systemd unit, packet-filter rules and install directory.
 *
 * Everything the script needs is baked in (table, region, GitHub URL and runner group, runner
 * version, download URLs and SHA-256 checksums, protocol timings); nothing secret is: the runner
 * registration token is read from the table at run time and handed to `config.sh` through its
 * environment only. Equal specs give byte-identical scripts, so an unchanged desired state makes
 * no new launch template version. What the user data carries is the compact form (full-line
 * comments and blank lines removed, here-documents untouched: lib/script_compact.ts), to leave
 * room under EC2's 16 KB for the operator's setup script; this file is its commented source.
 *
 * Runner facts relied on (actions/runner, `src/Runner.Listener/CommandSettings.cs` and
 * `config.sh --help`): every argument can come from an `ACTIONS_RUNNER_INPUT_<NAME>` variable,
 * which the runner removes from its own environment and masks; `--unattended`, `--url`, `--name`,
 * `--labels`, `--no-default-labels`, `--disableupdate`, `--runnergroup`, and `config.sh remove`
 * with a token. GitHub also accepts a current registration token for `config.sh remove`, which is
 * how fleet-actions' own bootstrap removes its runners; refresh keeps that token fresh in the table.
 * `config.sh remove` takes only `--token`/`--pat` (here from the environment) and `--local`.
 * `config.sh` refuses to run as root without RUNNER_ALLOW_RUNASROOT and exits with "Libicu's
 * dependencies is missing" when `ldconfig -NXv` lists no libicu (`src/Misc/layoutroot/config.sh`);
 * `bin/installdependencies.sh` installs it with apt on Debian/Ubuntu but does not know Amazon Linux
 * 2023 (ID=amzn), where `dnf install libicu` does. The listener prints
 * `<time>: Listening for Jobs` once its session is created (`Runner.Listener/Runner.cs`), which is
 * when the runner can take a job.
 *
 * @module
 */

import { AWS_CLIENT_PY } from "./bootstrap_aws_client.ts";
import { compactPython, compactShell } from "./script_compact.ts";

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
   * A marker the harness puts in every process's environment: passed on to the runner, and,
   * when set, the only processes of the runner user the bootstrap kills at release are those
   * carrying it (instances of several tests share a machine and a runner user).
   */
  testMarker: "REFRESH_TEST_MARKER",
} as const;

/** Name of the systemd unit the bootstrap runs in where systemd is running. */
export const BOOTSTRAP_UNIT = "refresh-runner.service";

/**
 * Every AWS call the generated script makes, with what it touches: what the instance profile must
 * allow (and all it needs). The bootstrap tests check that a real run makes exactly these calls.
 */
export const BOOTSTRAP_AWS_ACTIONS: readonly {
  action: string;
  /** DynamoDB: the partition keys (PK) read or written. */
  partitions?: readonly string[];
  /** EC2: the instance acted on. */
  instance?: "itself";
}[] = [
  { action: "dynamodb:GetItem", partitions: ["TYPE#INSTANCE", "TYPE#METADATA"] },
  { action: "dynamodb:PutItem", partitions: ["TYPE#HEARTBEAT", "TYPE#WS"] },
  { action: "ec2:TerminateInstances", instance: "itself" },
];

/** How {@link bootstrapScript} writes the script. */
export interface BootstrapForm {
  /**
   * The readable form, every comment kept, instead of the compact one the user data carries
   * (lib/script_compact.ts: no full-line comments or blank lines outside here-documents).
   */
  commented?: boolean;
}

/**
 * The line after `#!` in the compact form: what the script is and where its commented source is.
 */
export const COMPACT_HEADER =
  "# refresh runner bootstrap, generated by refresh: do not edit. Commented source: lib/bootstrap.ts " +
  "and lib/bootstrap_aws_client.ts in refresh (bootstrapScript(spec, { commented: true })).";

/** The AWS client as the user data carries it: comment lines and blank lines removed. */
export const AWS_CLIENT_PY_COMPACT = compactPython(AWS_CLIENT_PY);

/**
 * Builds the bootstrap script for `spec`, compact unless `form.commented` (the same program
 * either way); throws an Error naming every invalid field.
 */
export function bootstrapScript(spec: BootstrapSpec, form: BootstrapForm = {}): string {
  const problems = specProblems(spec);
  if (problems.length > 0) {
    throw new Error(`invalid bootstrap spec: ${problems.join("; ")}`);
  }
  const timings = { ...DEFAULT_TIMINGS, ...definedOnly(spec.timings ?? {}) };
  const template = spec.runner.downloadUrl ?? DEFAULT_RUNNER_DOWNLOAD_URL;
  const url = (arch: string) =>
    template.replaceAll("{version}", spec.runner.version).replaceAll("{arch}", arch);
  const settings: [string, string][] = [
    ["TABLE", spec.table],
    ["REGION", spec.region],
    ["GITHUB_URL", spec.githubUrl],
    ["RUNNER_GROUP", spec.runnerGroup ?? ""],
    ["RUNNER_VERSION", spec.runner.version],
    ["RUNNER_URL_X64", url("x64")],
    ["RUNNER_SHA256_X64", spec.runner.sha256.x64.toLowerCase()],
    ["RUNNER_URL_ARM64", url("arm64")],
    ["RUNNER_SHA256_ARM64", spec.runner.sha256.arm64.toLowerCase()],
    ["HEARTBEAT_SEC", String(timings.heartbeatSec)],
    ["SELF_TERMINATE_CHECK_SEC", String(timings.selfTerminateCheckSec)],
    ["CLAIM_POLL_SEC", String(timings.claimPollSec)],
    ["JOB_POLL_SEC", String(timings.jobPollSec)],
    ["POOL_LABEL", spec.poolLabel],
    ["JOB_USER", spec.jobUser ?? "runner"],
    ["JOB_SUDO", spec.jobSudo === false ? "disabled" : "enabled"],
    ["JOB_METADATA", spec.jobMetadata ?? "blocked"],
  ];
  const settingLines = settings.map(([name, value]) => `readonly ${name}=${shellQuote(value)}`);
  const commented = form.commented === true;
  const script = [
    HEADER,
    "# ---- Settings baked in by refresh ----",
    ...settingLines,
    "",
    preRunnerSection(spec.preRunnerScript),
    awsClientSection(commented ? AWS_CLIENT_PY : AWS_CLIENT_PY_COMPACT),
    BODY,
  ].join("\n");
  if (commented) return script;
  // Compact: the shell's comment lines go (here-documents, and so the operator's setup script and
  // the AWS client, are kept as they are); the header line says where the commented source is.
  const [shebang, ...rest] = compactShell(script).split("\n");
  return [shebang, COMPACT_HEADER, ...rest].join("\n");
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<
    T
  >;
}

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
    /^[a-z]{2}(-[a-z]+)+-\d+$/.test(spec.region),
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

/** Single-quotes a value for bash. */
function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** The AWS client (lib/bootstrap_aws_client.ts) as a quoted here-document. */
function awsClientSection(python: string): string {
  return [
    "# The AWS client (Python 3, standard library only): every DynamoDB and EC2 call, SigV4-signed",
    "# with the instance role's credentials from instance metadata. Written to a root-only file.",
    "write_aws_client() {",
    "  cat >\"$1\" <<'REFRESH_AWS_CLIENT'",
    python + "REFRESH_AWS_CLIENT",
    "}",
    "",
  ].join("\n");
}

/** The operator's setup script as a quoted here-document (written, never expanded). */
function preRunnerSection(script: string | undefined): string {
  if (script === undefined || script.trim() === "") {
    return [
      "# No setup script was given: setup succeeds at once.",
      "write_pre_runner_script() { return 1; }",
      "",
    ].join("\n");
  }
  const lines = script.split("\n");
  let delimiter = "REFRESH_PRE_RUNNER_SCRIPT";
  for (let i = 1; lines.includes(delimiter); i++) delimiter = `REFRESH_PRE_RUNNER_SCRIPT_${i}`;
  const body = script.endsWith("\n") ? script : `${script}\n`;
  return [
    "# The operator's setup script (refresh --pre-runner-script), written to its own file and run",
    "# first. Returns 1 when there is none.",
    "write_pre_runner_script() {",
    `  cat >"$1" <<'${delimiter}'`,
    `${body}${delimiter}`,
    "}",
    "",
  ].join("\n");
}

const HEADER = `#!/bin/bash
# refresh runner bootstrap, generated by refresh (lib/bootstrap.ts): do not edit, regenerate.
#
# Makes this EC2 instance a runner of the pool, keeping the pool's instance protocol with
# fleet-actions' provision and release through the DynamoDB table only. Run by cloud-init, it
# copies itself to a root-only directory, hands the long-running part to the systemd unit
# refresh-runner.service (in the background with setsid where systemd is not running) and exits,
# so cloud-init completes. The long-running part (the "agent"):
#   1. identity: instance id and the InitialRunId instance tag from instance metadata (IMDSv2);
#   2. the operator's setup script -> worker signal UD_OK or UD_FAILED;
#   3. the runner user (sudo unless strict), instance metadata closed to it, the GitHub Actions
#      runner package checked against its SHA-256, and the runner's OS dependencies (libicu);
#   4. background: heartbeat, and self-termination once the record's threshold + 1 min passed;
#   5. forever: wait for a run id in the instance record, register runner <instance id>-<n>
#      labelled with it and the pool's label, start it as the runner user and signal UD_REG_OK
#      once it is listening for jobs; when the record's run id changes, stop it and remove its
#      registration (UD_REMOVE_REG_OK, UD_REMOVE_REG_REMOVE_RUN_OK).
# Every AWS call is SigV4-signed by a small Python client with the instance role's credentials
# (no AWS CLI), has timeouts and is retried; every failure is logged with the prefix
# "refresh-bootstrap: FAILED" naming the step and why, and writes the matching *_FAILED signal.
# The registration token is read from the table and given to config.sh on its standard input:
# never on a command line, never in the runner's (the jobs') environment.
#
# Needs: bash 4.2+, python3 (3.7+), curl, tar, gzip, coreutils, util-linux (setsid, setpriv),
# shadow's useradd; iptables or nft (installed if missing) unless metadata is open to jobs.
# Instance profile: dynamodb:GetItem/PutItem on the table, ec2:TerminateInstances on itself.
# Log: the console (or the journal) and /var/log/refresh-bootstrap.log.
set -uo pipefail # no -e: every failure is handled where it happens, and signalled
`;

const BODY = `# ---- Test-only overrides (unset on a real instance) ----
IMDS_ENDPOINT="\${REFRESH_IMDS_ENDPOINT:-http://169.254.169.254}"
BOOTSTRAP_DIR="\${REFRESH_BOOTSTRAP_DIR:-/opt/refresh}"
LOG_FILE="\${REFRESH_LOG_FILE:-/var/log/refresh-bootstrap.log}"
SYSTEMD_MODE="\${REFRESH_SYSTEMD:-auto}"
UNIT_DIR="\${REFRESH_SYSTEMD_UNIT_DIR:-/etc/systemd/system}"
RUNNER_USER_NAME="\${REFRESH_RUNNER_USER:-runner}"
SUDOERS_FILE="\${REFRESH_SUDOERS_FILE:-/etc/sudoers.d/90-refresh-runner}"

# ---- Paths and fixed limits ----
PRIVATE_DIR="$BOOTSTRAP_DIR/private" # root only: this script, the AWS client, credentials
RUNNER_DIR="$BOOTSTRAP_DIR/actions-runner"
AWS_CLIENT="$PRIVATE_DIR/aws.py"
CREDENTIALS_CACHE="$PRIVATE_DIR/credentials.json"
readonly UNIT=refresh-runner.service
readonly CONFIG_TIMEOUT_SEC=180   # one config.sh run (register or remove)
readonly LISTEN_TIMEOUT_SEC=120   # from starting run.sh to its "Listening for Jobs"
readonly RUNNER_STARTS=3          # starts of run.sh per registration before UD_REG_FAILED
readonly RUNNER_STOP_GRACE_SEC=45 # from SIGTERM to SIGKILL when stopping the runner
readonly SIGNAL_ATTEMPTS=8        # worker signal puts: ~1 min of retries in all
readonly JOB_LANG=C.UTF-8

# ---- Logging and failures ----
log() { printf '%s refresh-bootstrap: %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# fail SIGNAL RUN_ID STEP WHY: says which step failed and why, writes the *_FAILED signal, stops
# taking part (runner and heartbeat stopped), and keeps only the self-termination loop.
fail() {
  local signal=$1 run_id=$2 step=$3 why=$4
  log "FAILED at $step: $why (signal $signal, run id $run_id)"
  stop_runner || log "could not stop every process of the runner"
  stop_heartbeat
  signal "$signal" "$run_id" || true
  if [[ -n \${SELF_TERMINATION_PID:-} ]]; then
    log "stopped taking part; self-termination still watches the threshold"
    wait "$SELF_TERMINATION_PID"
  fi
  exit 1
}

# retry WHAT ATTEMPTS COMMAND...: runs COMMAND until it succeeds, at most ATTEMPTS times, waiting
# 1, 2, 4, 8, 16, 16... s between attempts. Returns COMMAND's last exit status.
retry() {
  local what=$1 attempts=$2 attempt=1 delay=1 status
  shift 2
  while true; do
    "$@" && return 0
    status=$?
    if ((attempt >= attempts)); then
      log "$what: failed $attempt times (last exit status $status)"
      return "$status"
    fi
    log "$what: attempt $attempt failed (exit status $status), retrying in \${delay}s"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay >= 8 ? 16 : delay * 2))
  done
}

epoch() { printf '%(%s)T' -1; }

# ---- AWS (the Python client above; it retries each call 3 times, callers retry on top) ----
AWS_CLIENT_COMMAND=(python3 -I -S "$AWS_CLIENT" "$REGION" "$TABLE" "$CREDENTIALS_CACHE" "$IMDS_ENDPOINT")
aws_client() { "\${AWS_CLIENT_COMMAND[@]}" "$@"; }

# signal STATE RUN_ID: overwrites this instance's worker signal item.
signal() {
  local state=$1 run_id=$2
  if retry "worker signal $state" "$SIGNAL_ATTEMPTS" aws_client put-signal "$INSTANCE_ID" "$state" "$run_id"; then
    log "signal $state (run id $run_id)"
  else
    log "FAILED at worker signal: could not write $state for run id $run_id to table $TABLE"
    return 1
  fi
}

# A run id must be a plain word: it goes into item JSON and is the runner's label.
valid_run_id() { [[ $1 =~ ^[A-Za-z0-9._-]{1,128}$ ]]; }

# registration_token: sets TOKEN to the registration token (TYPE#METADATA /
# ID#gh_registration_token, value.token). TOKEN is never exported: it only goes to config.sh on
# its standard input.
TOKEN=""
registration_token() {
  local value
  value=$(retry "read the registration token" 5 aws_client get METADATA gh_registration_token value.M.token.S) || return 1
  if [[ -z $value ]]; then
    log "no registration token in table $TABLE (TYPE#METADATA / ID#gh_registration_token, value.token)"
    return 1
  fi
  TOKEN=$value
}

# ---- 1. Identity (IMDSv2 only) ----
imds_token() {
  curl --fail --silent --show-error --connect-timeout 2 --max-time 5 -X PUT \\
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "$IMDS_ENDPOINT/latest/api/token"
}

# imds_get PATH: the session token goes to curl on its standard input (--config -), not argv.
imds_get() {
  printf 'header = "X-aws-ec2-metadata-token: %s"\\n' "$IMDS_SESSION" |
    curl --config - --fail --silent --show-error --connect-timeout 2 --max-time 5 \\
      "$IMDS_ENDPOINT/latest/meta-data/$1"
}

read_identity() {
  if ! IMDS_SESSION=$(retry "instance metadata token (IMDSv2)" 6 imds_token); then
    log "FAILED at identity: no IMDSv2 session token from $IMDS_ENDPOINT; cannot take part"
    exit 1
  fi
  if ! INSTANCE_ID=$(retry "instance id from metadata" 6 imds_get instance-id) ||
    [[ ! $INSTANCE_ID =~ ^i-[0-9a-f]{8,32}$ ]]; then
    log "FAILED at identity: no instance id from instance metadata (got '$INSTANCE_ID')"
    exit 1
  fi
  if ! INITIAL_RUN_ID=$(retry "InitialRunId tag from metadata" 3 imds_get tags/instance/InitialRunId); then
    log "FAILED at identity: the instance tag InitialRunId is not in instance metadata (provision" \\
      "tags it; the launch template must allow instance tags in metadata); cannot take part"
    exit 1
  fi
  if ! valid_run_id "$INITIAL_RUN_ID"; then
    log "FAILED at identity: InitialRunId '$INITIAL_RUN_ID' is not a run id (letters, digits, . _ -)"
    exit 1
  fi
  readonly INSTANCE_ID INITIAL_RUN_ID
  log "instance $INSTANCE_ID, initial run id $INITIAL_RUN_ID, table $TABLE in $REGION"
}

# ---- 2. The operator's setup script ----
run_setup() {
  local script="$PRIVATE_DIR/pre-runner.sh" status
  if write_pre_runner_script "$script"; then
    chmod 700 "$script"
    log "running the setup script $script"
    "$script" </dev/null
    status=$?
    if ((status != 0)); then
      aws_ready && fail UD_FAILED "$INITIAL_RUN_ID" "setup" "the setup script $script exited with status $status"
      exit 1
    fi
    log "setup script succeeded"
  fi
  aws_ready || exit 1
  signal UD_OK "$INITIAL_RUN_ID" || fail UD_FAILED "$INITIAL_RUN_ID" "setup" "could not signal UD_OK"
}

# aws_ready: python3 runs the AWS client (the setup script may be what installs it).
aws_ready() {
  if ! command -v python3 >/dev/null || ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 7))'; then
    log "FAILED at setup: python3 (3.7 or later) is not on PATH; every stock cloud image has it" \\
      "(cloud-init needs it): install it in the AMI or the setup script"
    return 1
  fi
}

# ---- 3. The runner's user, its access to metadata, its package and dependencies ----
# prepare_runner_user: sets RUNNER_USER, RUNNER_UID, RUNNER_GID, RUNNER_HOME and AS_RUNNER (the
# command prefix that runs a command in the runner's directory as that user, with the jobs'
# environment only: HOME, USER, LOGNAME, SHELL, LANG, PATH, and umask 022).
prepare_runner_user() {
  local entry
  RUNNER_USER=$RUNNER_USER_NAME
  [[ $JOB_USER == root ]] && RUNNER_USER=root
  if ! id -u "$RUNNER_USER" >/dev/null 2>&1; then
    # Retried: another useradd may hold the lock on /etc/passwd.
    retry "create user $RUNNER_USER" 5 create_user "$RUNNER_USER" ||
      fail UD_FAILED "$INITIAL_RUN_ID" "runner user" "could not create the user $RUNNER_USER (useradd's output is above)"
    log "created the runner user $RUNNER_USER"
  fi
  entry=$(getent passwd "$RUNNER_USER") ||
    fail UD_FAILED "$INITIAL_RUN_ID" "runner user" "no passwd entry for $RUNNER_USER"
  IFS=: read -r _ _ RUNNER_UID RUNNER_GID _ RUNNER_HOME _ <<<"$entry"
  local -a environment=(HOME="$RUNNER_HOME" USER="$RUNNER_USER" LOGNAME="$RUNNER_USER"
    SHELL=/bin/bash LANG="$JOB_LANG" PATH="$PATH")
  if [[ -n \${REFRESH_TEST_MARKER:-} ]]; then environment+=(REFRESH_TEST_MARKER="$REFRESH_TEST_MARKER"); fi
  if [[ $RUNNER_USER == root ]]; then
    environment+=(RUNNER_ALLOW_RUNASROOT=1)
    AS_RUNNER=(env -i "\${environment[@]}")
  elif command -v setpriv >/dev/null; then
    AS_RUNNER=(env -i "\${environment[@]}" setpriv --reuid="$RUNNER_UID" --regid="$RUNNER_GID" --init-groups)
  else
    AS_RUNNER=(env -i "\${environment[@]}" runuser -m -u "$RUNNER_USER" --)
  fi
  # shellcheck disable=SC2016 # expanded by that bash, not this one
  AS_RUNNER+=(bash -c 'umask 022 && cd "$0" && exec "$@"' "$RUNNER_DIR")
  mkdir -p "$RUNNER_HOME" && chown "$RUNNER_UID:$RUNNER_GID" "$RUNNER_HOME"
  configure_sudo
  log "the runner and its jobs run as $RUNNER_USER (uid $RUNNER_UID, home $RUNNER_HOME)"
}

create_user() {
  id -u "$1" >/dev/null 2>&1 && return 0
  useradd --create-home --user-group --shell /bin/bash --comment "GitHub Actions runner (refresh)" "$1"
}

# configure_sudo: passwordless sudo for the runner user, as on GitHub-hosted runners, unless
# strict mode (JOB_SUDO=disabled) removes it. A job with sudo can undo the metadata block.
configure_sudo() {
  [[ $RUNNER_USER == root ]] && return 0
  if [[ $JOB_SUDO == disabled ]]; then
    rm -f "$SUDOERS_FILE"
    log "strict mode: no sudo for $RUNNER_USER"
    return 0
  fi
  if ! { mkdir -p "$(dirname "$SUDOERS_FILE")" &&
    printf '# refresh: jobs of this pool get passwordless sudo, as on GitHub-hosted runners\\n%s ALL=(ALL) NOPASSWD:ALL\\n' \\
      "$RUNNER_USER" >"$SUDOERS_FILE.new" && chmod 440 "$SUDOERS_FILE.new" &&
    mv -f "$SUDOERS_FILE.new" "$SUDOERS_FILE"; }; then
    fail UD_FAILED "$INITIAL_RUN_ID" "runner user" "could not write $SUDOERS_FILE"
  fi
  command -v sudo >/dev/null || log "sudo is not installed: jobs get no sudo although it is enabled"
  log "passwordless sudo for $RUNNER_USER ($SUDOERS_FILE)"
}

# block_metadata: a packet-filter rule on the runner user's uid keeps jobs from instance metadata
# (so from the instance role's credentials, the registration token and the pool's signals); the
# bootstrap (root) still reaches it. On EC2: 169.254.169.254 and fd00:ec2::254, every port; in
# tests REFRESH_IMDS_ENDPOINT's host and port. Idempotent: a rule already there is kept.
block_metadata() {
  local hostport host port
  if [[ $JOB_METADATA == open ]]; then
    log "instance metadata is open to jobs (job metadata: open): jobs can use the instance role"
    return 0
  fi
  hostport=\${IMDS_ENDPOINT#*://}
  hostport=\${hostport%%/*}
  host=\${hostport%:*}
  port=""
  [[ $hostport == *:* ]] && port=\${hostport##*:}
  if ! command -v iptables >/dev/null && ! command -v nft >/dev/null; then
    log "neither iptables nor nft is installed: installing iptables"
    install_packages iptables iptables-nft || true
  fi
  if command -v iptables >/dev/null; then
    ipt_block iptables "$host" "$port" || return 1
    if [[ -z \${REFRESH_IMDS_ENDPOINT:-} ]] && command -v ip6tables >/dev/null; then
      ipt_block ip6tables fd00:ec2::254 "" || log "could not block fd00:ec2::254 (IPv6 metadata) for $RUNNER_USER"
    fi
  elif command -v nft >/dev/null; then
    nft_block "$host" "$port" || return 1
    if [[ -z \${REFRESH_IMDS_ENDPOINT:-} ]]; then
      nft_rule ip6 fd00:ec2::254 "" || log "could not block fd00:ec2::254 (IPv6 metadata) for $RUNNER_USER"
    fi
  else
    log "no iptables or nft, and none could be installed"
    return 1
  fi
  log "instance metadata ($host\${port:+ port $port}) closed to $RUNNER_USER (uid $RUNNER_UID)"
}

# ipt_block COMMAND HOST PORT: rejects the runner uid's TCP to HOST[:PORT], unless already done.
ipt_block() {
  local -a rule=(OUTPUT -d "$2" -p tcp)
  [[ -n $3 ]] && rule+=(--dport "$3")
  rule+=(-m owner --uid-owner "$RUNNER_UID" -j REJECT)
  "$1" -w 10 -C "\${rule[@]}" 2>/dev/null || "$1" -w 10 -I "\${rule[@]}"
}

# nft_block HOST PORT: the same with nft, in a table of its own (emptied first: idempotent).
nft_block() {
  nft add table inet refresh &&
    nft add chain inet refresh output '{ type filter hook output priority 0 ; }' &&
    nft flush chain inet refresh output &&
    nft_rule ip "$1" "$2"
}

nft_rule() {
  local -a port=()
  [[ -n $3 ]] && port=(tcp dport "$3")
  nft add rule inet refresh output meta skuid "$RUNNER_UID" "$1" daddr "$2" "\${port[@]}" reject
}

# install_packages DEBIAN_NAME RPM_NAME: with apt-get or dnf, whichever the image has.
install_packages() {
  if command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y "$1" </dev/null ||
      { timeout 300 apt-get update </dev/null && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y "$1" </dev/null; }
  elif command -v dnf >/dev/null; then
    timeout 600 dnf install -y "$2" </dev/null
  else
    log "no apt-get or dnf to install $1 with"
    return 1
  fi
}

download() { curl --fail --silent --show-error --location --connect-timeout 10 --max-time 600 --output "$2" "$1"; }

install_runner() {
  local machine url sha actual tarball="$PRIVATE_DIR/actions-runner.tar.gz"
  machine=$(uname -m)
  case "$machine" in
    x86_64 | amd64) url=$RUNNER_URL_X64 sha=$RUNNER_SHA256_X64 ;;
    aarch64 | arm64) url=$RUNNER_URL_ARM64 sha=$RUNNER_SHA256_ARM64 ;;
    *) fail UD_FAILED "$INITIAL_RUN_ID" "runner download" "unsupported machine $machine (expected x86_64 or aarch64)" ;;
  esac
  log "downloading runner $RUNNER_VERSION from $url"
  retry "runner download" 5 download "$url" "$tarball" ||
    fail UD_FAILED "$INITIAL_RUN_ID" "runner download" "could not download $url"
  actual=$(sha256sum "$tarball") && actual=\${actual%% *}
  if [[ $actual != "$sha" ]]; then
    fail UD_FAILED "$INITIAL_RUN_ID" "runner checksum" "SHA-256 of $url is $actual, expected $sha"
  fi
  if ! { rm -rf "$RUNNER_DIR" && mkdir -p "$RUNNER_DIR" && tar -xzf "$tarball" -C "$RUNNER_DIR" &&
    chown -R "$RUNNER_UID:$RUNNER_GID" "$RUNNER_DIR"; }; then
    fail UD_FAILED "$INITIAL_RUN_ID" "runner unpack" "could not unpack $tarball into $RUNNER_DIR"
  fi
  rm -f "$tarball"
  log "runner $RUNNER_VERSION installed in $RUNNER_DIR (SHA-256 verified)"
}

# has_libicu: config.sh's own check (src/Misc/layoutroot/config.sh): ldconfig lists a libicu.
has_libicu() {
  local ldconfig=ldconfig libpath=\${LD_LIBRARY_PATH:-}
  command -v ldconfig >/dev/null || ldconfig=/sbin/ldconfig
  # Not grep -q: stopping at the first match, it would kill ldconfig (SIGPIPE) while it still
  # lists, and pipefail would call libicu missing (a stock Debian lists hundreds of libraries).
  # shellcheck disable=SC2086 # word splitting of the library path is config.sh's own
  "$ldconfig" -NXv \${libpath//:/ } 2>&1 | grep libicu >/dev/null
}

# install_dependencies: the runner's own bin/installdependencies.sh (as root) when libicu is
# missing; where it does not know the system (Amazon Linux 2023), dnf's libicu.
install_dependencies() {
  if has_libicu; then return 0; fi
  log "libicu is missing: running the runner's bin/installdependencies.sh"
  (cd "$RUNNER_DIR" && timeout 900 ./bin/installdependencies.sh </dev/null) ||
    log "bin/installdependencies.sh failed (its output is above)"
  if ! has_libicu && command -v dnf >/dev/null; then
    log "libicu still missing: dnf install libicu"
    timeout 600 dnf install -y libicu </dev/null || log "dnf install libicu failed"
  fi
  has_libicu || fail UD_FAILED "$INITIAL_RUN_ID" "runner dependencies" \\
    "libicu is still missing after bin/installdependencies.sh; install it in the AMI or the setup script"
  log "the runner's dependencies are installed"
}

# ---- 4. Background loops (long-running commands of the AWS client: one process each) ----
start_background_loops() {
  # Not through the aws_client function: $! is then the client's own process, which kill stops.
  "\${AWS_CLIENT_COMMAND[@]}" heartbeat "$INSTANCE_ID" "$HEARTBEAT_SEC" &
  HEARTBEAT_PID=$!
  "\${AWS_CLIENT_COMMAND[@]}" self-terminate "$INSTANCE_ID" "$SELF_TERMINATE_CHECK_SEC" &
  SELF_TERMINATION_PID=$!
  log "heartbeat every \${HEARTBEAT_SEC}s and self-termination checks every \${SELF_TERMINATE_CHECK_SEC}s started"
}

stop_heartbeat() {
  if [[ -n \${HEARTBEAT_PID:-} ]]; then
    kill "$HEARTBEAT_PID" 2>/dev/null
    HEARTBEAT_PID=""
  fi
}

# ---- 5. The registration loop ----
# Registrations do not pile up: each is removed with a token (config.sh remove) when its run is
# released. Not --ephemeral, because one instance serves every job of its run that targets the
# run id label until release, which an ephemeral runner (one job, then gone) would break.
# runner_config ARGS...: config.sh ARGS as the runner user, the token on its standard input.
runner_config() {
  # shellcheck disable=SC2016 # expanded by the runner user's bash, not this one
  printf '%s\\n' "$TOKEN" | timeout "$CONFIG_TIMEOUT_SEC" "\${AS_RUNNER[@]}" bash -c \\
    'IFS= read -r ACTIONS_RUNNER_INPUT_TOKEN && export ACTIONS_RUNNER_INPUT_TOKEN && exec ./config.sh "$@" </dev/null' \\
    config.sh "$@"
}

register_once() {
  local n=$1 run_id=$2
  local -a args=(--unattended --url "$GITHUB_URL" --name "$INSTANCE_ID-$n" --labels "$run_id,$POOL_LABEL"
    --no-default-labels --disableupdate)
  if [[ -n $RUNNER_GROUP ]]; then args+=(--runnergroup "$RUNNER_GROUP"); fi
  registration_token || return 1
  runner_config "\${args[@]}" && return 0
  TOKEN="" # the next attempt reads it anew
  return 1
}

# register_runner N RUN_ID: registers <instance id>-N labelled RUN_ID and the pool; twice at most.
register_runner() {
  local n=$1 run_id=$2
  log "registering runner $INSTANCE_ID-$n with labels $run_id,$POOL_LABEL at $GITHUB_URL\${RUNNER_GROUP:+ in group $RUNNER_GROUP}"
  retry "register runner $INSTANCE_ID-$n" 2 register_once "$n" "$run_id" ||
    fail UD_REG_FAILED "$run_id" "registration" "could not register runner $INSTANCE_ID-$n (config.sh's output is above)"
}

# start_runner N: run.sh as the runner user in a session (process group) of its own, so that
# stopping it stops the listener and the job's processes too. RUNNER_LOG_OFFSET: where its output
# starts in its log.
start_runner() {
  RUNNER_LOG="$BOOTSTRAP_DIR/runner-$1.log"
  touch "$RUNNER_LOG"
  RUNNER_LOG_OFFSET=$(stat -c %s "$RUNNER_LOG")
  setsid "\${AS_RUNNER[@]}" ./run.sh >>"$RUNNER_LOG" 2>&1 </dev/null &
  RUNNER_PID=$!
  log "runner started as $RUNNER_USER (process group $RUNNER_PID, output in $RUNNER_LOG)"
}

# wait_listening: until the runner's new output has the listener's "Listening for Jobs" line;
# fails when the runner exits first or after LISTEN_TIMEOUT_SEC.
wait_listening() {
  local deadline=$(($(epoch) + LISTEN_TIMEOUT_SEC))
  while (($(epoch) < deadline)); do
    if tail -c "+$((RUNNER_LOG_OFFSET + 1))" "$RUNNER_LOG" | grep -q 'Listening for Jobs'; then return 0; fi
    if ! kill -0 "$RUNNER_PID" 2>/dev/null; then
      tail -c "+$((RUNNER_LOG_OFFSET + 1))" "$RUNNER_LOG" | grep -q 'Listening for Jobs' && return 0
      log "the runner exited before listening for jobs"
      return 1
    fi
    sleep 0.1
  done
  log "the runner did not listen for jobs within \${LISTEN_TIMEOUT_SEC}s"
  return 1
}

# run_runner N RUN_ID: starts the runner until it listens for jobs, RUNNER_STARTS times at most.
run_runner() {
  local n=$1 run_id=$2
  while ((RUNNER_STARTS_LEFT > 0)); do
    RUNNER_STARTS_LEFT=$((RUNNER_STARTS_LEFT - 1))
    start_runner "$n"
    if wait_listening; then
      log "runner $INSTANCE_ID-$n is listening for jobs"
      return 0
    fi
    log "runner $INSTANCE_ID-$n: last lines of its output:"
    tail -n 5 "$RUNNER_LOG" >&2
    stop_runner
  done
  remove_registration || log "could not remove the registration of $INSTANCE_ID-$n"
  fail UD_REG_FAILED "$run_id" "runner start" \\
    "runner $INSTANCE_ID-$n exited or never listened for jobs, $RUNNER_STARTS starts in all (its output is in $RUNNER_LOG)"
}

# stop_runner: SIGTERM to the runner's process group, SIGKILL after the grace period. Fails if a
# process of the group is still alive.
stop_runner() {
  local pid=\${RUNNER_PID:-} waited=0
  [[ -n $pid ]] || return 0
  RUNNER_PID=""
  kill -TERM -- "-$pid" 2>/dev/null
  while kill -0 -- "-$pid" 2>/dev/null && ((waited < RUNNER_STOP_GRACE_SEC * 4)); do
    sleep 0.25
    waited=$((waited + 1))
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    log "runner still running \${RUNNER_STOP_GRACE_SEC}s after SIGTERM: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null
    sleep 1
  fi
  wait "$pid" 2>/dev/null
  ! kill -0 -- "-$pid" 2>/dev/null
}

# wait_for_release N RUN_ID: polls until the record's run id is no longer RUN_ID (the job is
# over); restarts a runner that exited (run_runner's budget).
wait_for_release() {
  local n=$1 run_id=$2 current
  while true; do
    sleep "$JOB_POLL_SEC"
    if current=$(aws_client get INSTANCE "$INSTANCE_ID" runId.S); then
      [[ $current != "$run_id" ]] && return 0
    else
      log "reading the instance record failed; still waiting for release of run $run_id"
    fi
    if [[ -n \${RUNNER_PID:-} ]] && ! kill -0 "$RUNNER_PID" 2>/dev/null; then
      log "the runner exited before run $run_id was released: starting it again"
      stop_runner
      run_runner "$n" "$run_id"
    fi
  done
}

remove_registration() {
  registration_token || return 1
  # config.sh remove takes only --token (here from its input), --pat and --local.
  runner_config remove && return 0
  TOKEN="" # the next attempt reads it anew
  return 1
}

# sweep_runner_processes: SIGKILL to every process of the runner user, such as a job's daemon
# that left the runner's process group, so that none outlives its run, nor reads config.sh's
# environment (the token) at the next registration. Never for root.
sweep_runner_processes() {
  local round entry key value found state
  [[ $RUNNER_USER == root ]] && return 0
  for ((round = 0; round < 10; round++)); do
    found=""
    for entry in /proc/[0-9]*; do
      state=""
      while read -r key value _; do
        # State comes before Uid; a zombie is dead already, waiting for its parent (or init) to
        # reap it, and kill would "succeed" on it forever.
        [[ $key == State: ]] && state=$value
        if [[ $key == Uid: ]]; then
          if [[ $state != Z && $value == "$RUNNER_UID" ]] && own_process "$entry" &&
            kill -KILL "\${entry#/proc/}" 2>/dev/null; then found=yes; fi
          break
        fi
      done 2>/dev/null <"$entry/status"
    done
    [[ -n $found ]] || return 0
    sleep 0.2
  done
  log "processes of $RUNNER_USER survived SIGKILL"
  return 1
}

# own_process /proc/PID: always on an instance (one bootstrap per machine); in the tests, where
# several share a machine and a runner user, only processes carrying this one's test marker.
own_process() {
  [[ -z \${REFRESH_TEST_MARKER:-} ]] ||
    grep -qzxF "REFRESH_TEST_MARKER=$REFRESH_TEST_MARKER" "$1/environ" 2>/dev/null
}

# release_runner N RUN_ID: stop the runner and whatever its jobs left running, remove its
# registration, signal.
release_runner() {
  local n=$1 run_id=$2 stopped=yes
  log "run $run_id released: stopping runner $INSTANCE_ID-$n and removing its registration"
  stop_runner || stopped=""
  sweep_runner_processes || stopped=""
  retry "remove registration $INSTANCE_ID-$n" 3 remove_registration ||
    fail UD_REMOVE_REG_FAILED "$run_id" "registration removal" \\
      "config.sh remove failed for runner $INSTANCE_ID-$n (its output is above)"
  signal UD_REMOVE_REG_OK "$run_id" ||
    fail UD_REMOVE_REG_FAILED "$run_id" "registration removal" "could not signal UD_REMOVE_REG_OK"
  [[ -n $stopped ]] || fail UD_REMOVE_REG_REMOVE_RUN_FAILED "$run_id" "runner stop" \\
    "a process of the runner's group or user survived SIGKILL"
  signal UD_REMOVE_REG_REMOVE_RUN_OK "$run_id" || fail UD_REMOVE_REG_REMOVE_RUN_FAILED "$run_id" \\
    "runner stop" "could not signal UD_REMOVE_REG_REMOVE_RUN_OK"
}

registration_loop() {
  local n=0 run_id
  while true; do
    n=$((n + 1))
    log "waiting for a run id in the instance record"
    run_id=$(aws_client wait-run-id "$INSTANCE_ID" "$CLAIM_POLL_SEC") ||
      fail UD_REG_FAILED "$INITIAL_RUN_ID" "claim" "waiting for a run id failed (its output is above)"
    valid_run_id "$run_id" || fail UD_REG_FAILED "$INITIAL_RUN_ID" "registration" \\
      "the instance record's run id '$run_id' is not a run id (letters, digits, . _ -)"
    sweep_runner_processes || log "a process of $RUNNER_USER survived; registering anyway"
    register_runner "$n" "$run_id"
    RUNNER_STARTS_LEFT=$RUNNER_STARTS
    run_runner "$n" "$run_id"
    signal UD_REG_OK "$run_id" || fail UD_REG_FAILED "$run_id" "registration" "could not signal UD_REG_OK"
    wait_for_release "$n" "$run_id"
    release_runner "$n" "$run_id"
  done
}

# ---- Main ----
cleanup() {
  stop_heartbeat
  if [[ -n \${SELF_TERMINATION_PID:-} ]]; then kill "$SELF_TERMINATION_PID" 2>/dev/null; fi
  stop_runner
}

# agent: the long-running part, in the systemd unit or in the background.
agent() {
  RUNNER_PID="" HEARTBEAT_PID="" SELF_TERMINATION_PID=""
  umask 077
  exec > >(tee -a "$LOG_FILE") 2>&1
  trap 'exit 143' TERM INT
  trap cleanup EXIT
  read_identity
  write_aws_client "$AWS_CLIENT"
  run_setup
  prepare_runner_user
  block_metadata || fail UD_FAILED "$INITIAL_RUN_ID" "metadata block" \\
    "could not close instance metadata to $RUNNER_USER with iptables or nft (job metadata: blocked)"
  install_runner
  install_dependencies
  start_background_loops
  registration_loop
}

# use_systemd: whether systemd runs this machine (the test override can say).
use_systemd() {
  case $SYSTEMD_MODE in
    off) return 1 ;;
    on) return 0 ;;
    *) [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null ;;
  esac
}

# launch: what cloud-init runs. Copies this script where only root reads it and starts the agent
# in its own systemd unit (its output in the journal) or, where systemd is not running, in the
# background in a session of its own; then exits, so cloud-init completes.
launch() {
  local copy="$PRIVATE_DIR/bootstrap.sh" name
  umask 077
  if ! { mkdir -p "$PRIVATE_DIR" "$(dirname "$LOG_FILE")" && chmod 755 "$BOOTSTRAP_DIR" &&
    chmod 700 "$PRIVATE_DIR" && cp "\${BASH_SOURCE[0]}" "$copy"; }; then
    log "FAILED at launch: cannot copy this script to $copy"
    exit 1
  fi
  if use_systemd; then
    # The unit gets cloud-init's PATH and the overrides that are set (tests only).
    for name in PATH REFRESH_IMDS_ENDPOINT REFRESH_BOOTSTRAP_DIR REFRESH_LOG_FILE \\
      REFRESH_RUNNER_USER REFRESH_SUDOERS_FILE REFRESH_TEST_MARKER AWS_ENDPOINT_URL; do
      if [[ -n \${!name:-} ]]; then printf '%s=%s\\n' "$name" "\${!name}"; fi
    done >"$PRIVATE_DIR/environment"
    mkdir -p "$UNIT_DIR"
    cat >"$UNIT_DIR/$UNIT" <<UNIT_FILE
# refresh: this instance's part in the runner pool (generated by the user data; see $LOG_FILE)
[Unit]
Description=refresh runner pool agent
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=$PRIVATE_DIR/environment
ExecStart=/bin/bash $copy --agent
Restart=no
KillMode=control-group
StandardOutput=journal+console
StandardError=journal+console
UNIT_FILE
    if systemctl daemon-reload && systemctl start --no-block "$UNIT"; then
      log "started $UNIT (journalctl -u $UNIT); the user data script is done"
      exit 0
    fi
    log "could not start $UNIT: starting the agent in the background instead"
  fi
  setsid bash "$copy" --agent </dev/null >/dev/null 2>&1 &
  log "systemd is not running: agent started in the background (process $!)"
  exit 0
}

if [[ \${1:-} == --agent ]]; then agent; else launch; fi
`;
