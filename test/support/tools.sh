#!/usr/bin/env sh
# Runs a command with the project's tools on PATH, installing what is missing first:
#   sh test/support/tools.sh deno task test
# - Deno: the one on PATH, else the npm package `deno` (pinned below) in .tools/deno.
# - moto: moto[server] (pinned below) in the virtualenv .tools/venv, used by test/support/moto.ts.
# Everything lands in .tools/ (git-ignored); nothing is installed system-wide.
set -eu
DENO_VERSION=2.9.6
MOTO_VERSION=5.2.5
root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

if ! command -v deno >/dev/null 2>&1; then
  if [ ! -x "$tools/deno/node_modules/.bin/deno" ]; then
    echo "tools: installing deno@$DENO_VERSION from the npm registry into .tools/deno" >&2
    npm install --silent --no-audit --no-fund --prefix "$tools/deno" "deno@$DENO_VERSION" >&2
  fi
  PATH="$tools/deno/node_modules/.bin:$PATH"
fi

if ! "$tools/venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "tools: installing moto[server]==$MOTO_VERSION into .tools/venv" >&2
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
fi
REFRESH_MOTO_PYTHON="$tools/venv/bin/python"
export PATH REFRESH_MOTO_PYTHON
exec "$@"
