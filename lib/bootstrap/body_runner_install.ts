/**
 * The generated bootstrap's phase 3, second part: the runner package (downloaded, its SHA-256
 * checked, unpacked) and the runner's OS dependencies (libicu).
 *
 * @module
 */

/** Part of the generated bash (lib/bootstrap/script_body.ts joins the parts in order). */
export const BODY_RUNNER_INSTALL =
  `download() { curl --fail --silent --show-error --location --connect-timeout 10 --max-time 600 --output "$2" "$1"; }

# install_runner: the package, its SHA-256 checked, unpacked into RUNNER_PRISTINE: owned by root
# (not by whoever owns the archive's entries) and writable by nobody else.
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
  if ! { rm -rf "$RUNNER_PRISTINE" && mkdir -p "$RUNNER_PRISTINE" &&
    tar --no-same-owner -xzf "$tarball" -C "$RUNNER_PRISTINE" &&
    chown -R 0:0 "$RUNNER_PRISTINE" && chmod -R u+rwX,go+rX,go-w "$RUNNER_PRISTINE"; }; then
    fail UD_FAILED "$INITIAL_RUN_ID" "runner unpack" "could not unpack $tarball into $RUNNER_PRISTINE"
  fi
  rm -f "$tarball"
  log "runner $RUNNER_VERSION installed in $RUNNER_PRISTINE (SHA-256 verified, root's, read-only)"
}

# warm_runtime: the runner's first .NET process on a machine pays the runtime's cold start (its
# files read from an EBS volume that is still being hydrated from the snapshot); paid here, at
# boot, with \`Runner.Listener --version\`, it is not paid inside provision's 10 s claim window.
warm_runtime() {
  local started version
  started=$(epoch)
  if version=$(cd "$RUNNER_PRISTINE" && env -i HOME="$PRIVATE_DIR" PATH="$PATH" LANG="$JOB_LANG" \\
    DOTNET_CLI_TELEMETRY_OPTOUT=1 timeout 120 ./bin/Runner.Listener --version </dev/null 2>&1); then
    log "runner runtime warmed in $(($(epoch) - started))s (version \${version##*$'\\n'})"
  else
    log "warming the runner runtime failed (not fatal)"
  fi
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

# os_family: "rpm" on Fedora-like systems (Amazon Linux 2023: ID=amzn, ID_LIKE=fedora), "deb" on
# Debian-like ones, else whichever of dnf and apt-get the system has.
os_family() {
  local words
  # shellcheck disable=SC1091 # the system's own file
  words=$(. "$SYSTEM_ROOT/etc/os-release" 2>/dev/null && echo " \${ID:-} \${ID_LIKE:-} ")
  case $words in
    *" fedora "* | *" rhel "* | *" amzn "* | *" centos "*) echo rpm ;;
    *" debian "* | *" ubuntu "*) echo deb ;;
    *) if command -v apt-get >/dev/null; then echo deb; elif command -v dnf >/dev/null; then echo rpm; fi ;;
  esac
}

# install_system_packages: on Fedora-like systems, what the bootstrap needs that the image lacks
# (a packet filter to close metadata to jobs; libicu, which the runner's installdependencies.sh
# cannot install there) in one dnf transaction. Debian-like systems get libicu from the runner's
# own script (install_dependencies) and iptables from block_metadata.
install_system_packages() {
  local -a wanted=()
  [[ $(os_family) == rpm ]] || return 0
  if [[ $JOB_METADATA != open ]] && ! command -v iptables >/dev/null && ! command -v nft >/dev/null; then
    wanted+=(iptables-nft)
  fi
  has_libicu || wanted+=(libicu)
  ((\${#wanted[@]} > 0)) || return 0
  log "installing \${wanted[*]} with dnf, in one transaction"
  timeout 900 dnf install -y "\${wanted[@]}" </dev/null || log "dnf install \${wanted[*]} failed (its output is above)"
}

# install_dependencies: the runner's own bin/installdependencies.sh (as root) when libicu is
# missing, again while another process holds apt's package lists (apt waits for the dpkg lock
# itself: configure_package_locks); where it does not know the system (Amazon Linux 2023), dnf.
install_dependencies() {
  if has_libicu; then return 0; fi
  log "libicu is missing: running the runner's bin/installdependencies.sh"
  retry "bin/installdependencies.sh" 6 run_installdependencies
  if ! has_libicu && [[ $(os_family) == rpm ]]; then
    log "libicu still missing: dnf install libicu"
    timeout 900 dnf install -y libicu </dev/null
  fi
  has_libicu || fail UD_FAILED "$INITIAL_RUN_ID" "runner dependencies" \\
    "libicu is still missing after bin/installdependencies.sh; install it in the AMI or the setup script"
  log "the runner's dependencies are installed"
}

# run_installdependencies: fails only when it met another's apt lock (worth another try).
run_installdependencies() {
  local out
  out=$(cd "$RUNNER_PRISTINE" && umask 022 && DEBIAN_FRONTEND=noninteractive timeout 900 ./bin/installdependencies.sh </dev/null 2>&1)
  printf '%s\\n' "$out" >&2
  has_libicu || [[ $out != *"Could not get lock"* ]]
}

`;
