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
  self_termination &
  SELF_TERMINATION_PID=$!
  log "heartbeat every \${HEARTBEAT_SEC}s and self-termination checks every \${SELF_TERMINATE_CHECK_SEC}s started"
}

# self_termination: once the record's threshold + 1 min has passed, the instance powers itself
# off (terminated, by the template's shutdown behaviour).
self_termination() {
  "\${AWS_CLIENT_COMMAND[@]}" self-terminate "$INSTANCE_ID" "$SELF_TERMINATE_CHECK_SEC" &&
    power_off "the instance record's threshold + 1 min has passed"
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
#
# The token never meets anything a job can write: config.sh (registration and removal) runs as
# root from CONFIG_DIR, a fresh hard-linked copy of the verified runner in the root-only
# PRIVATE_DIR, with a minimal environment; the runner runs as the job user from RUNNER_DIR,
# rebuilt from the same verified files for every registration, given only what config.sh wrote.

# fresh_runner_copy DIR: DIR anew, as hard links to RUNNER_PRISTINE's files (instant; the files
# are root's and writable by nobody else, so a link is as safe as a copy).
fresh_runner_copy() {
  rm -rf "$1" && cp -al "$RUNNER_PRISTINE" "$1"
}

# reset_runner_dir: RUNNER_DIR rebuilt from the verified runner, the job user's; its _work folder
# (workspaces and the jobs' tool cache) kept across registrations.
reset_runner_dir() {
  local kept="$BOOTSTRAP_DIR/work.kept"
  rm -rf "$kept"
  if [[ -d $RUNNER_DIR/_work && ! -L $RUNNER_DIR/_work ]]; then mv "$RUNNER_DIR/_work" "$kept" || return 1; fi
  fresh_runner_copy "$RUNNER_DIR" && chown "$RUNNER_UID:$RUNNER_GID" "$RUNNER_DIR" || return 1
  if [[ -d $kept ]]; then
    mv "$kept" "$RUNNER_DIR/_work" || return 1
  else
    mkdir "$RUNNER_DIR/_work" && chown "$RUNNER_UID:$RUNNER_GID" "$RUNNER_DIR/_work" || return 1
  fi
  mkdir -p "$RUNNER_DIR/_diag" && chown "$RUNNER_UID:$RUNNER_GID" "$RUNNER_DIR/_diag"
}

# stage_registration N: before the claim, so a claim pays only config.sh and the listener's start.
stage_registration() {
  CONFIG_DIR="$PRIVATE_DIR/registration-$1"
  fresh_runner_copy "$CONFIG_DIR" && reset_runner_dir && note_containers
}

# runner_config ARGS...: config.sh ARGS as root in CONFIG_DIR, the token on its standard input
# (never in an argument list), its environment minimal: a root-only HOME and TMPDIR, .NET's
# diagnostic port off.
runner_config() {
  local -a environment=(HOME="$PRIVATE_DIR" TMPDIR="$PRIVATE_DIR/tmp" PATH="$PATH" LANG="$JOB_LANG"
    RUNNER_ALLOW_RUNASROOT=1 DOTNET_EnableDiagnostics=0)
  if [[ -n \${REFRESH_TEST_MARKER:-} ]]; then environment+=(REFRESH_TEST_MARKER="$REFRESH_TEST_MARKER"); fi
  mkdir -p "$PRIVATE_DIR/tmp" || return 1
  # shellcheck disable=SC2016 # expanded by that bash, not this one
  printf '%s\\n' "$TOKEN" | (cd "$CONFIG_DIR" && timeout "$CONFIG_TIMEOUT_SEC" env -i "\${environment[@]}" bash -c \\
    'IFS= read -r ACTIONS_RUNNER_INPUT_TOKEN && export ACTIONS_RUNNER_INPUT_TOKEN && exec ./config.sh "$@" </dev/null' \\
    config.sh "$@")
}

# register_once N RUN_ID: one attempt, from a fresh CONFIG_DIR (a failed attempt may have left
# half a registration), with --replace (a failed attempt may have reached GitHub).
register_once() {
  local n=$1 run_id=$2
  local -a args=(--unattended --url "$GITHUB_URL" --name "$INSTANCE_ID-$n" --labels "$run_id,$POOL_LABEL"
    --no-default-labels --disableupdate --replace)
  if [[ -n $RUNNER_GROUP ]]; then args+=(--runnergroup "$RUNNER_GROUP"); fi
  registration_token || return 1
  if [[ -e $CONFIG_DIR/.env || -e $CONFIG_DIR/.runner ]]; then fresh_runner_copy "$CONFIG_DIR" || return 1; fi
  runner_config "\${args[@]}" && install_registration && return 0
  TOKEN="" # the next attempt reads it anew
  return 1
}

# install_registration: what config.sh wrote at the top of CONFIG_DIR (.runner, .credentials,
# .credentials_rsaparams, the jobs' .env and .path) copied into RUNNER_DIR, the job user's.
install_registration() {
  local path name
  for path in "$CONFIG_DIR"/.[!.]* "$CONFIG_DIR"/*; do
    name=\${path##*/}
    [[ -f $path && ! -L $path && ! -e $RUNNER_PRISTINE/$name ]] || continue
    cp "$path" "$RUNNER_DIR/$name" && chown "$RUNNER_UID:$RUNNER_GID" "$RUNNER_DIR/$name" || return 1
  done
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

# listening: the runner's output since its start has the listener's "Listening for Jobs" line.
# grep counts (reads to the end): stopping at the first match (-q, or GNU grep writing to
# /dev/null) would kill tail with SIGPIPE, and pipefail would call a runner that printed more than
# a pipe's buffer after the line not listening.
listening() {
  local count
  count=$(tail -c "+$((RUNNER_LOG_OFFSET + 1))" "$RUNNER_LOG" | grep -cF 'Listening for Jobs')
  ((count > 0))
}

# wait_listening: until the runner's new output has the listener's "Listening for Jobs" line;
# fails when the runner exits first or after LISTEN_TIMEOUT_SEC.
wait_listening() {
  local deadline=$(($(epoch) + LISTEN_TIMEOUT_SEC))
  while (($(epoch) < deadline)); do
    if listening; then return 0; fi
    if ! kill -0 "$RUNNER_PID" 2>/dev/null; then
      listening && return 0
      log "the runner exited before listening for jobs"
      return 1
    fi
    sleep 0.05
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
