/**
 * The generated bootstrap's phase 3, first part: the runner's user, its sudo, and the packet
 * filter rule that closes instance metadata to it (with the package installer it may need).
 *
 * @module
 */

/** Part of the generated bash (lib/bootstrap/script_body.ts joins the parts in order). */
export const BODY_RUNNER_USER =
  `# ---- 3. The runner's user, its access to metadata, its package and dependencies ----
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
  deny_schedulers
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

# deny_schedulers: cron and at refuse the job user (cron.deny, at.deny), so a job cannot leave a
# crontab or an at job that runs after its release (the release also removes any crontab and
# lingering systemd user manager: end_job_leftovers).
deny_schedulers() {
  local list
  [[ $RUNNER_USER == root ]] && return 0
  for list in "$SYSTEM_ROOT/etc/cron.deny" "$SYSTEM_ROOT/etc/at.deny"; do
    mkdir -p "$(dirname "$list")" || return 1
    grep -qxF "$RUNNER_USER" "$list" 2>/dev/null || printf '%s\\n' "$RUNNER_USER" >>"$list" ||
      log "could not add $RUNNER_USER to $list"
  done
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

# ---- Packages: installs that wait for another's lock ----
# configure_package_locks: on a first boot (Ubuntu's above all) apt-daily and unattended-upgrades
# start as cloud-init finishes and hold apt's locks while the bootstrap, the runner's
# installdependencies.sh or the setup script install packages. apt is told to wait for the dpkg
# lock (DPkg::Lock::Timeout, for every apt-get on the instance), and the daily apt timers are
# stopped for this instance's life (a runner's image is replaced, not upgraded in place).
configure_package_locks() {
  local conf="$SYSTEM_ROOT/etc/apt/apt.conf.d/90refresh-lock-timeout"
  command -v apt-get >/dev/null || return 0
  if ! { mkdir -p "$(dirname "$conf")" && printf 'DPkg::Lock::Timeout "%s";\\n' "$PACKAGE_LOCK_WAIT_SEC" >"$conf"; }; then
    log "could not write $conf: apt will not wait for the dpkg lock"
  fi
  if use_systemd; then
    systemctl stop apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
  fi
}

apt_install() { DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y "$@" </dev/null; }

# install_packages DEBIAN_NAMES RPM_NAMES: with apt-get or dnf, whichever the image has, in one
# transaction (dnf reads its repositories' metadata once per transaction: slow on small machines).
install_packages() {
  local -a debian rpm
  read -ra debian <<<"$1"
  read -ra rpm <<<"$2"
  if command -v apt-get >/dev/null; then
    # install waits for the dpkg lock (configure_package_locks); update, for the lists' lock, not.
    apt_install "\${debian[@]}" || { retry "apt-get update" 8 apt-get update </dev/null && apt_install "\${debian[@]}"; }
  elif command -v dnf >/dev/null; then
    timeout 900 dnf install -y "\${rpm[@]}" </dev/null
  else
    log "no apt-get or dnf to install \${debian[*]} with"
    return 1
  fi
}


`;
