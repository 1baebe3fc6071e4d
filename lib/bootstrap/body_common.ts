/**
 * The generated bootstrap's first lines after the AWS client: the test-only overrides, paths and
 * fixed limits, and the helpers every phase uses (log, fail, retry, epoch).
 *
 * @module
 */

/** Part of the generated bash (lib/bootstrap/script_body.ts joins the parts in order). */
export const BODY_COMMON = `# ---- Test-only overrides (unset on a real instance) ----
IMDS_ENDPOINT="\${REFRESH_IMDS_ENDPOINT:-http://169.254.169.254}"
BOOTSTRAP_DIR="\${REFRESH_BOOTSTRAP_DIR:-/opt/refresh}"
LOG_FILE="\${REFRESH_LOG_FILE:-/var/log/refresh-bootstrap.log}"
SYSTEMD_MODE="\${REFRESH_SYSTEMD:-auto}"
UNIT_DIR="\${REFRESH_SYSTEMD_UNIT_DIR:-/etc/systemd/system}"
RUNNER_USER_NAME="\${REFRESH_RUNNER_USER:-runner}"
SUDOERS_FILE="\${REFRESH_SUDOERS_FILE:-/etc/sudoers.d/90-refresh-runner}"
SYSTEM_ROOT="\${REFRESH_SYSTEM_ROOT:-}" # prefixes apt's, cron's, at's and logind's files

# ---- Paths and fixed limits ----
PRIVATE_DIR="$BOOTSTRAP_DIR/private" # root only: this script, the AWS client, credentials
# The verified runner, root's and read-only to everyone else: registrations and removals run as
# root from a fresh hard-linked copy of it in PRIVATE_DIR; the runner (and its jobs) run from
# RUNNER_DIR, rebuilt from it for every registration. Nothing a job can write is ever run as root
# or with the registration token in reach.
RUNNER_PRISTINE="$PRIVATE_DIR/runner"
RUNNER_DIR="$BOOTSTRAP_DIR/actions-runner"
AWS_CLIENT="$PRIVATE_DIR/aws.py"
CREDENTIALS_CACHE="$PRIVATE_DIR/credentials.json"
readonly UNIT=refresh-runner.service
readonly CONFIG_TIMEOUT_SEC=180   # one config.sh run (register or remove)
readonly LISTEN_TIMEOUT_SEC=120   # from starting run.sh to its "Listening for Jobs"
readonly RUNNER_STARTS=3          # starts of run.sh per registration before UD_REG_FAILED
readonly RUNNER_STOP_GRACE_SEC=45 # from SIGTERM to SIGKILL when stopping the runner
readonly PACKAGE_LOCK_WAIT_SEC=600 # how long package installs wait for another's lock (apt, dnf)
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

# power_off WHY: ends this instance. The launch template's shutdown behaviour is terminate, so a
# power-off is a termination, and needs no EC2 permission (the instance role has none). Tried
# again every minute should the system refuse.
power_off() {
  log "powering off ($1): the launch template's shutdown behaviour terminates the instance"
  while true; do
    if use_systemd; then systemctl poweroff && return 0; fi
    poweroff || shutdown -h now || log "could not power off: trying again in 60s"
    sleep 60
  done
}

`;
