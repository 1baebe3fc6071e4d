/**
 * The generated bootstrap's phase 5, second part: waiting for release, removing the registration,
 * sweeping the runner user's processes, and the registration loop itself.
 *
 * @module
 */

/** Part of the generated bash (lib/bootstrap/script_body.ts joins the parts in order). */
export const BODY_RELEASE =
  `# wait_for_release N RUN_ID: polls until the record's run id is no longer RUN_ID (the job is
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

# remove_registration: config.sh remove, as root in the registration's own CONFIG_DIR (which no
# job could write), then CONFIG_DIR goes.
remove_registration() {
  registration_token || return 1
  # config.sh remove takes only --token (here from its input), --pat and --local.
  if runner_config remove; then
    rm -rf "$CONFIG_DIR"
    return 0
  fi
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

# end_job_leftovers: what a job can leave to run after its release without root: its crontab
# (cron.deny refuses new ones: deny_schedulers), a lingering systemd user manager and its units;
# and, where docker runs, the containers created during the run (those there before it, such as
# the setup script's, are kept). A job with sudo is root and can leave anything: see the README.
end_job_leftovers() {
  local id
  if [[ $RUNNER_USER != root ]]; then
    rm -f "$SYSTEM_ROOT/var/spool/cron/crontabs/$RUNNER_USER" "$SYSTEM_ROOT/var/spool/cron/$RUNNER_USER" \\
      "$SYSTEM_ROOT/var/lib/systemd/linger/$RUNNER_USER"
    if use_systemd; then systemctl stop "user@$RUNNER_UID.service" 2>/dev/null; fi
  fi
  docker_ready || return 0
  for id in $(docker ps -aq --no-trunc 2>/dev/null); do
    [[ " $CONTAINERS_BEFORE " == *" $id "* ]] && continue
    log "removing container $id, created during the run"
    timeout 60 docker rm -f "$id" >/dev/null || log "could not remove container $id"
  done
}

docker_ready() { command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; }

# note_containers: the containers there before a run (CONTAINERS_BEFORE), which its release keeps.
CONTAINERS_BEFORE=""
note_containers() {
  if docker_ready; then CONTAINERS_BEFORE=$(docker ps -aq --no-trunc 2>/dev/null | tr '\\n' ' '); fi
  return 0
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
  end_job_leftovers
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
    sweep_runner_processes || log "a process of $RUNNER_USER survived; registering anyway"
    stage_registration "$n" || fail UD_REG_FAILED "$INITIAL_RUN_ID" "registration" \\
      "could not prepare the runner's directories for registration $n"
    log "waiting for a run id in the instance record"
    run_id=$(aws_client wait-run-id "$INSTANCE_ID" "$CLAIM_POLL_SEC") ||
      fail UD_REG_FAILED "$INITIAL_RUN_ID" "claim" "waiting for a run id failed (its output is above)"
    valid_run_id "$run_id" || fail UD_REG_FAILED "$INITIAL_RUN_ID" "registration" \\
      "the instance record's run id '$run_id' is not a run id (letters, digits, . _ -)"
    log "claimed for run $run_id"
    register_runner "$n" "$run_id"
    RUNNER_STARTS_LEFT=$RUNNER_STARTS
    run_runner "$n" "$run_id"
    signal UD_REG_OK "$run_id" || fail UD_REG_FAILED "$run_id" "registration" "could not signal UD_REG_OK"
    wait_for_release "$n" "$run_id"
    release_runner "$n" "$run_id"
  done
}

`;
