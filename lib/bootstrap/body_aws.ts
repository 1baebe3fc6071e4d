/**
 * The generated bootstrap's AWS helpers, over the Python client: the worker signal, the run id
 * check and the registration token read.
 *
 * @module
 */

/** Part of the generated bash (lib/bootstrap/script_body.ts joins the parts in order). */
export const BODY_AWS =
  `# ---- AWS (the Python client above; it retries each call 3 times, callers retry on top) ----
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

`;
