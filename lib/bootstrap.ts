/**
 * Generates the instance bootstrap: the bash user data that makes an EC2 instance take part in the
 * pool by keeping the instance protocol (shared/PROTOCOL.md) with fleet-actions' `provision` and
 * `release`, which talk to it only through the DynamoDB table.
 *
 * Everything the script needs is baked in (table, region, GitHub URL and runner group, runner
 * version, download URLs and SHA-256 checksums, protocol timings); nothing secret is: the runner
 * registration token is read from the table at run time and handed to `config.sh` through its
 * environment only. Equal specs give byte-identical scripts, so an unchanged desired state makes
 * no new launch template version.
 *
 * Runner facts relied on (actions/runner, `src/Runner.Listener/CommandSettings.cs` and
 * `config.sh --help`): every argument can come from an `ACTIONS_RUNNER_INPUT_<NAME>` variable,
 * which the runner removes from its own environment and masks; `--unattended`, `--url`, `--name`,
 * `--labels`, `--no-default-labels`, `--disableupdate`, `--runnergroup`, and `config.sh remove`
 * with a token. GitHub also accepts a current registration token for `config.sh remove`, which is
 * how fleet-actions' own bootstrap removes its runners; refresh keeps that token fresh in the table.
 *
 * @module
 */

/** What the generated bootstrap needs to know. */
export interface BootstrapSpec {
  /** The pool's DynamoDB table. */
  table: string;
  /** The AWS region, given to every AWS CLI call. */
  region: string;
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
  /** The operator's setup script, run first as its own script. */
  preRunnerScript?: string;
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
 * the defaults apply. (The AWS CLI itself honours AWS_ENDPOINT_URL and the usual credentials.)
 */
export const BOOTSTRAP_TEST_OVERRIDES = {
  /** Instance metadata base URL; default http://169.254.169.254. */
  imdsEndpoint: "REFRESH_IMDS_ENDPOINT",
  /** Working directory (setup script, runner package, runner install); default /opt/refresh. */
  dir: "REFRESH_BOOTSTRAP_DIR",
  /** Log file (the console gets the same lines); default /var/log/refresh-bootstrap.log. */
  logFile: "REFRESH_LOG_FILE",
} as const;

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

/** Builds the bootstrap script for `spec`; throws an Error naming every invalid field. */
export function bootstrapScript(spec: BootstrapSpec): string {
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
  ];
  const settingLines = settings.map(([name, value]) => `readonly ${name}=${shellQuote(value)}`);
  return [
    HEADER,
    "# ---- Settings baked in by refresh ----",
    ...settingLines,
    "",
    preRunnerSection(spec.preRunnerScript),
    BODY,
  ].join("\n");
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
# fleet-actions' provision and release through the DynamoDB table only:
#   1. identity: instance id and the InitialRunId instance tag from instance metadata (IMDSv2);
#   2. the operator's setup script -> worker signal UD_OK or UD_FAILED;
#   3. the GitHub Actions runner package, checked against its SHA-256;
#   4. background loops: heartbeat, and self-termination once the record's threshold + 1 min passed;
#   5. forever: wait for a run id in the instance record, register runner <instance id>-<n>
#      labelled with it (UD_REG_OK), run it until the record's run id changes, then stop it and
#      remove its registration (UD_REMOVE_REG_OK, UD_REMOVE_REG_REMOVE_RUN_OK).
# Every AWS call names the region, has timeouts and is retried; every failure is logged with the
# prefix "refresh-bootstrap: FAILED" naming the step and why, and writes the matching *_FAILED
# signal. The registration token is read from the table and given to config.sh in its
# environment only: never on a command line, never in the runner's (the jobs') environment.
#
# Needs: bash 4.2+, curl, the AWS CLI, coreutils (sha256sum, timeout, date), util-linux (setsid),
# tar and gzip. Instance profile: dynamodb:GetItem/PutItem on the table, ec2:TerminateInstances
# on itself. Log: the console and /var/log/refresh-bootstrap.log.
set -uo pipefail # no -e: every failure is handled where it happens, and signalled
`;

const BODY = `# ---- Test-only overrides (unset on a real instance) ----
IMDS_ENDPOINT="\${REFRESH_IMDS_ENDPOINT:-http://169.254.169.254}"
BOOTSTRAP_DIR="\${REFRESH_BOOTSTRAP_DIR:-/opt/refresh}"
LOG_FILE="\${REFRESH_LOG_FILE:-/var/log/refresh-bootstrap.log}"
RUNNER_DIR="$BOOTSTRAP_DIR/actions-runner"

# ---- Fixed limits ----
readonly CONFIG_TIMEOUT_SEC=180   # one config.sh run (register or remove)
readonly RUNNER_STOP_GRACE_SEC=45 # from SIGTERM to SIGKILL when stopping the runner
readonly SIGNAL_ATTEMPTS=8        # worker signal puts: ~1 min of retries in all
readonly TOKEN_MAX_AGE_SEC=300    # a registration token read ahead is used this long

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

now_utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }
epoch() { printf '%(%s)T' -1; }

# ---- AWS ----
# The region goes on every call. Per call: bounded connect/read times and the CLI's standard
# retry mode (3 attempts with backoff, per the AWS CLI retries guide); callers retry on top.
# These settings go to the CLI only, never into the jobs' environment. IMDSv1 is refused.
aws_call() {
  AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=3 AWS_EC2_METADATA_V1_DISABLED=true AWS_PAGER="" \\
    aws --region "$REGION" --cli-connect-timeout 5 --cli-read-timeout 10 "$@"
}

# ddb_get KEY_JSON ATTRIBUTE_PATH: prints the attribute, empty when the item or attribute is
# missing; fails only when the call fails. Strongly consistent read.
ddb_get() {
  aws_call dynamodb get-item --table-name "$TABLE" --key "$1" --consistent-read \\
    --query "$2 || ''" --output text
}

ddb_put() { aws_call dynamodb put-item --table-name "$TABLE" --item "$1" >/dev/null; }

# Item keys (instance ids and run ids are checked to be plain words before they get here).
key() { printf '{"PK":{"S":"TYPE#%s"},"SK":{"S":"ID#%s"}}' "$1" "$2"; }

# signal STATE RUN_ID: overwrites this instance's worker signal item.
signal() {
  local state=$1 run_id=$2 item
  if ! command -v aws >/dev/null; then
    log "FAILED at worker signal: no AWS CLI to write $state for run id $run_id"
    return 1
  fi
  item=$(printf '{"PK":{"S":"TYPE#WS"},"SK":{"S":"ID#%s"},"entityType":{"S":"WS"},"identifier":{"S":"%s"},"value":{"M":{"state":{"S":"%s"},"runId":{"S":"%s"}}},"updatedAt":{"S":"%s"}}' \\
    "$INSTANCE_ID" "$INSTANCE_ID" "$state" "$run_id" "$(now_utc)")
  if retry "worker signal $state" "$SIGNAL_ATTEMPTS" ddb_put "$item"; then
    log "signal $state (run id $run_id)"
  else
    log "FAILED at worker signal: could not write $state for run id $run_id to table $TABLE"
    return 1
  fi
}

# A run id must be a plain word: it goes into item JSON and is the runner's only label.
valid_run_id() { [[ $1 =~ ^[A-Za-z0-9._-]{1,128}$ ]]; }

# registration_token: sets TOKEN to the registration token (TYPE#METADATA /
# ID#gh_registration_token, value.token), reading it unless the copy read ahead while waiting to
# be claimed is younger than TOKEN_MAX_AGE_SEC (a claim then costs one read less). TOKEN is never
# exported: it only goes into config.sh's environment. refresh keeps the table's token valid for
# far longer than TOKEN_MAX_AGE_SEC, and a failed config.sh run forgets it (forget_token).
TOKEN="" TOKEN_READ_AT=0
registration_token() {
  local value
  if [[ -n $TOKEN ]] && (($(epoch) - TOKEN_READ_AT < TOKEN_MAX_AGE_SEC)); then return 0; fi
  value=$(retry "read the registration token" 5 ddb_get "$(key METADATA gh_registration_token)" \\
    'Item.value.M.token.S') || return 1
  if [[ -z $value ]]; then
    log "no registration token in table $TABLE (TYPE#METADATA / ID#gh_registration_token, value.token)"
    return 1
  fi
  TOKEN=$value TOKEN_READ_AT=$(epoch)
}
forget_token() { TOKEN="" TOKEN_READ_AT=0; }

# read_token_ahead: while waiting to be claimed, keeps the copy of the token fresh (one quiet
# attempt at most every 30 s; registration_token reads it, loudly, if this could not).
TOKEN_TRIED_AT=0
read_token_ahead() {
  local now value
  now=$(epoch)
  if ((now - TOKEN_READ_AT < TOKEN_MAX_AGE_SEC - 60 || now - TOKEN_TRIED_AT < 30)); then return 0; fi
  TOKEN_TRIED_AT=$now
  value=$(ddb_get "$(key METADATA gh_registration_token)" 'Item.value.M.token.S' 2>/dev/null) &&
    [[ -n $value ]] && TOKEN=$value TOKEN_READ_AT=$now
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
  local script="$BOOTSTRAP_DIR/pre-runner.sh" status
  if write_pre_runner_script "$script"; then
    chmod 700 "$script"
    log "running the setup script $script"
    "$script" </dev/null
    status=$?
    if ((status != 0)); then
      fail UD_FAILED "$INITIAL_RUN_ID" "setup" "the setup script $script exited with status $status"
    fi
    log "setup script succeeded"
  fi
  # The setup script may be what installs the AWS CLI; from here on it is needed.
  if ! command -v aws >/dev/null; then
    log "FAILED at setup: the AWS CLI (aws) is not on PATH; install it in the AMI or the setup script"
    exit 1
  fi
  signal UD_OK "$INITIAL_RUN_ID" || fail UD_FAILED "$INITIAL_RUN_ID" "setup" "could not signal UD_OK"
}

# ---- 3. The runner package ----
download() { curl --fail --silent --show-error --location --connect-timeout 10 --max-time 600 --output "$2" "$1"; }

install_runner() {
  local machine url sha actual tarball="$BOOTSTRAP_DIR/actions-runner.tar.gz"
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
  if ! { rm -rf "$RUNNER_DIR" && mkdir -p "$RUNNER_DIR" && tar -xzf "$tarball" -C "$RUNNER_DIR"; }; then
    fail UD_FAILED "$INITIAL_RUN_ID" "runner unpack" "could not unpack $tarball into $RUNNER_DIR"
  fi
  rm -f "$tarball"
  log "runner $RUNNER_VERSION installed in $RUNNER_DIR (SHA-256 verified)"
}

# ---- 4. Background loops ----
heartbeat_loop() {
  local started elapsed item
  while true; do
    started=$(epoch)
    item=$(printf '{"PK":{"S":"TYPE#HEARTBEAT"},"SK":{"S":"ID#%s"},"entityType":{"S":"HEARTBEAT"},"identifier":{"S":"%s"},"value":{"S":"PING"},"updatedAt":{"S":"%s"}}' \\
      "$INSTANCE_ID" "$INSTANCE_ID" "$(now_utc)")
    ddb_put "$item" || log "heartbeat: put failed, next try in \${HEARTBEAT_SEC}s"
    # One put every HEARTBEAT_SEC, however long the put took.
    elapsed=$(($(epoch) - started))
    if ((elapsed < HEARTBEAT_SEC)); then sleep $((HEARTBEAT_SEC - elapsed)); fi
  done
}

self_termination_loop() {
  local threshold due
  while true; do
    if threshold=$(ddb_get "$(key INSTANCE "$INSTANCE_ID")" 'Item.threshold.S') && [[ -n $threshold ]]; then
      if ! due=$(date -u -d "$threshold" +%s 2>/dev/null); then
        log "self-termination: threshold '$threshold' is not a time; waiting"
      elif (($(epoch) > due + 60)); then
        log "self-termination: threshold $threshold + 1 min has passed; terminating $INSTANCE_ID"
        if aws_call ec2 terminate-instances --instance-ids "$INSTANCE_ID" >/dev/null; then
          log "self-termination: TerminateInstances accepted"
          return 0
        fi
        log "self-termination: TerminateInstances failed, retrying in \${SELF_TERMINATE_CHECK_SEC}s"
      fi
    fi # no record or no threshold yet (or a failed read, logged by the CLI): keep waiting
    sleep "$SELF_TERMINATE_CHECK_SEC"
  done
}

start_background_loops() {
  heartbeat_loop &
  HEARTBEAT_PID=$!
  self_termination_loop &
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
# read_run_id: sets RUN_ID to the instance record's runId (empty when none); fails if the read did.
read_run_id() {
  local value
  value=$(ddb_get "$(key INSTANCE "$INSTANCE_ID")" 'Item.runId.S') || return 1
  RUN_ID=$value
}

# wait_for_run_id: polls until the record has a run id. Unbounded on purpose (an idle instance
# waits to be claimed); its life is bounded by the self-termination loop.
wait_for_run_id() {
  local failures=0
  log "waiting for a run id in the instance record"
  while true; do
    if read_run_id; then
      failures=0
      [[ -n $RUN_ID ]] && return 0
      read_token_ahead
      sleep "$CLAIM_POLL_SEC"
    else
      failures=$((failures + 1))
      log "reading the instance record failed ($failures in a row)"
      sleep $((failures > 4 ? 16 : 1 << failures))
    fi
  done
}

# Registrations do not pile up: each is removed with a token (config.sh remove) when its run is
# released. Not --ephemeral, because one instance serves every job of its run that targets the
# run id label until release, which an ephemeral runner (one job, then gone) would break.
register_once() {
  local n=$1 run_id=$2
  local -a args=(--unattended --url "$GITHUB_URL" --name "$INSTANCE_ID-$n" --labels "$run_id"
    --no-default-labels --disableupdate)
  if [[ -n $RUNNER_GROUP ]]; then args+=(--runnergroup "$RUNNER_GROUP"); fi
  registration_token || return 1
  if (cd "$RUNNER_DIR" &&
    ACTIONS_RUNNER_INPUT_TOKEN=$TOKEN RUNNER_ALLOW_RUNASROOT=1 \\
      timeout "$CONFIG_TIMEOUT_SEC" ./config.sh "\${args[@]}" </dev/null); then
    return 0
  fi
  forget_token # the next attempt reads it anew
  return 1
}

# register_runner N RUN_ID: registers <instance id>-N labelled RUN_ID only; twice at most.
register_runner() {
  local n=$1 run_id=$2
  log "registering runner $INSTANCE_ID-$n with label $run_id at $GITHUB_URL\${RUNNER_GROUP:+ in group $RUNNER_GROUP}"
  retry "register runner $INSTANCE_ID-$n" 2 register_once "$n" "$run_id" ||
    fail UD_REG_FAILED "$run_id" "registration" "could not register runner $INSTANCE_ID-$n (config.sh's output is above)"
}

# start_runner N: run.sh in a session (process group) of its own, so that stopping it stops the
# listener and the job's processes too. Without the token in its environment.
start_runner() {
  local runner_log="$BOOTSTRAP_DIR/runner-$1.log"
  (cd "$RUNNER_DIR" && exec env RUNNER_ALLOW_RUNASROOT=1 setsid ./run.sh) >>"$runner_log" 2>&1 </dev/null &
  RUNNER_PID=$!
  log "runner started (process group $RUNNER_PID, output in $runner_log)"
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

# wait_for_release RUN_ID: polls until the record's run id is no longer RUN_ID (the job is over).
wait_for_release() {
  local run_id=$1 warned=""
  while true; do
    sleep "$JOB_POLL_SEC"
    if read_run_id; then
      [[ $RUN_ID != "$run_id" ]] && return 0
    else
      log "reading the instance record failed; still waiting for release of run $run_id"
    fi
    if [[ -z $warned && -n \${RUNNER_PID:-} ]] && ! kill -0 "$RUNNER_PID" 2>/dev/null; then
      log "the runner exited before run $run_id was released (see its log)"
      warned=yes
    fi
  done
}

remove_registration() {
  registration_token || return 1
  if (cd "$RUNNER_DIR" &&
    ACTIONS_RUNNER_INPUT_TOKEN=$TOKEN RUNNER_ALLOW_RUNASROOT=1 \\
      timeout "$CONFIG_TIMEOUT_SEC" ./config.sh remove --unattended </dev/null); then
    return 0
  fi
  forget_token # the next attempt reads it anew
  return 1
}

# release_runner N RUN_ID: stop the runner, remove its registration, signal.
release_runner() {
  local n=$1 run_id=$2 stopped=yes
  log "run $run_id released: stopping runner $INSTANCE_ID-$n and removing its registration"
  stop_runner || stopped=""
  retry "remove registration $INSTANCE_ID-$n" 3 remove_registration ||
    fail UD_REMOVE_REG_FAILED "$run_id" "registration removal" \\
      "config.sh remove failed for runner $INSTANCE_ID-$n (its output is above)"
  signal UD_REMOVE_REG_OK "$run_id" ||
    fail UD_REMOVE_REG_FAILED "$run_id" "registration removal" "could not signal UD_REMOVE_REG_OK"
  [[ -n $stopped ]] || fail UD_REMOVE_REG_REMOVE_RUN_FAILED "$run_id" "runner stop" \\
    "a process of the runner's group survived SIGKILL"
  signal UD_REMOVE_REG_REMOVE_RUN_OK "$run_id" || fail UD_REMOVE_REG_REMOVE_RUN_FAILED "$run_id" \\
    "runner stop" "could not signal UD_REMOVE_REG_REMOVE_RUN_OK"
}

registration_loop() {
  local n=0 run_id
  while true; do
    n=$((n + 1))
    wait_for_run_id
    run_id=$RUN_ID
    valid_run_id "$run_id" || fail UD_REG_FAILED "$INITIAL_RUN_ID" "registration" \\
      "the instance record's run id '$run_id' is not a run id (letters, digits, . _ -)"
    register_runner "$n" "$run_id"
    signal UD_REG_OK "$run_id" || fail UD_REG_FAILED "$run_id" "registration" "could not signal UD_REG_OK"
    start_runner "$n"
    wait_for_release "$run_id"
    release_runner "$n" "$run_id"
  done
}

# ---- Main ----
cleanup() {
  stop_heartbeat
  if [[ -n \${SELF_TERMINATION_PID:-} ]]; then kill "$SELF_TERMINATION_PID" 2>/dev/null; fi
  stop_runner
}

main() {
  RUNNER_PID="" HEARTBEAT_PID="" SELF_TERMINATION_PID=""
  umask 077
  mkdir -p "$BOOTSTRAP_DIR" "$(dirname "$LOG_FILE")"
  # Everything goes to the console (cloud-init forwards it) and to the log file.
  exec > >(tee -a "$LOG_FILE") 2>&1
  trap 'exit 143' TERM INT
  trap cleanup EXIT
  read_identity
  run_setup
  install_runner
  start_background_loops
  registration_loop
}

main "$@"
`;
