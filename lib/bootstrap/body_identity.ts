/**
 * The generated bootstrap's phases 1 and 2: the instance's identity from instance metadata
 * (IMDSv2) and the operator's setup script.
 *
 * @module
 */

/** Part of the generated bash (lib/bootstrap/script_body.ts joins the parts in order). */
export const BODY_IDENTITY = `# ---- 1. Identity (IMDSv2 only) ----
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
    identity_failed
  fi
  if ! INSTANCE_ID=$(retry "instance id from metadata" 6 imds_get instance-id) ||
    [[ ! $INSTANCE_ID =~ ^i-[0-9a-f]{8,32}$ ]]; then
    log "FAILED at identity: no instance id from instance metadata (got '$INSTANCE_ID')"
    identity_failed
  fi
  if ! INITIAL_RUN_ID=$(retry "InitialRunId tag from metadata" 3 imds_get tags/instance/InitialRunId); then
    log "FAILED at identity: the instance tag InitialRunId is not in instance metadata (provision" \\
      "tags it; the launch template must allow instance tags in metadata); cannot take part"
    identity_failed
  fi
  if ! valid_run_id "$INITIAL_RUN_ID"; then
    log "FAILED at identity: InitialRunId '$INITIAL_RUN_ID' is not a run id (letters, digits, . _ -)"
    identity_failed
  fi
  readonly INSTANCE_ID INITIAL_RUN_ID
  log "instance $INSTANCE_ID, initial run id $INITIAL_RUN_ID, table $TABLE in $REGION"
}

# identity_failed: an instance that cannot say who it is has no record to expire, so nothing would
# ever end it: it powers itself off (terminated, by the template's shutdown behaviour).
identity_failed() {
  power_off "no identity"
  exit 1
}

# ---- 2. The operator's setup script ----
# run_setup: the setup script runs as setup scripts are written to run under cloud-init: as root,
# umask 022, HOME root's home, LANG C.UTF-8, in /, with the job user already created (so it can
# add it to groups) and the package managers' locks waited for. It is told, in its environment:
# REFRESH_JOB_USER, REFRESH_JOB_HOME (the job user and its home), REFRESH_RUNNER_DIR (where the
# runner will run), REFRESH_INSTANCE_ID and REFRESH_INITIAL_RUN_ID.
run_setup() {
  local script="$PRIVATE_DIR/pre-runner.sh" status root_home
  if write_pre_runner_script "$script"; then
    chmod 700 "$script"
    root_home=$(getent passwd root | cut -d: -f6)
    log "running the setup script $script"
    (
      umask 022
      cd / || exit 1
      # shellcheck disable=SC2030 # the setup script's own environment
      export HOME=\${root_home:-/root} LANG=$JOB_LANG DEBIAN_FRONTEND=noninteractive \\
        REFRESH_JOB_USER="$RUNNER_USER" REFRESH_JOB_HOME="$RUNNER_HOME" \\
        REFRESH_RUNNER_DIR="$RUNNER_DIR" REFRESH_INSTANCE_ID="$INSTANCE_ID" \\
        REFRESH_INITIAL_RUN_ID="$INITIAL_RUN_ID"
      exec "$script" </dev/null
    )
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

`;
