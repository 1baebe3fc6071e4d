/**
 * The generated bootstrap's phase 4 (heartbeat and self-termination loops) and phase 5's first
 * part: registering the runner, starting it until it listens for jobs, and stopping it.
 *
 * @module
 */

/** Part of the generated bash (lib/bootstrap/script_body.ts joins the parts in order). */
export const BODY_REGISTRATION =
  `# ---- 4. Background loops (long-running commands of the AWS client: one process each) ----
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

`;
