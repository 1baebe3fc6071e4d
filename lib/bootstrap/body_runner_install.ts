/**
 * The generated bootstrap's phase 3, second part: the runner package (downloaded, its SHA-256
 * checked, unpacked) and the runner's OS dependencies (libicu).
 *
 * @module
 */

/** Part of the generated bash (lib/bootstrap/script_body.ts joins the parts in order). */
export const BODY_RUNNER_INSTALL =
  `download() { curl --fail --silent --show-error --location --connect-timeout 10 --max-time 600 --output "$2" "$1"; }

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

`;
