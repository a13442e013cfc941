#!/usr/bin/env bash
# Start DUS Studio: set-up if needed, import the built-in model once, start the job worker and the dashboard.
#   ./run.sh                          # http://127.0.0.1:8501
#   DUS_HOST=0.0.0.0 DUS_PASSWORD=... ./run.sh   # expose it deliberately on every interface, behind a login
#   DUS_PORT=8600 DUS_WORKSPACE=/data/dus ./run.sh
set -euo pipefail
cd "$(dirname "$0")"
host=${DUS_HOST:-127.0.0.1}
# Beyond loopback only with a login (README: "Exposing the dashboard"). Asked first, before anything is installed
# or started; backend/auth.py needs only the standard library, so the system python answers.
"${PYTHON:-python3}" -m backend.auth check --address "$host"
scripts/setup.sh
if [ -n "${DUS_PASSWORD+x}" ]; then
  # Keep only a hash (scrypt): the worker and every job it starts must not inherit the password itself.
  [ -n "${DUS_PASSWORD_HASH:-}" ] || DUS_PASSWORD_HASH=$(.venv/bin/python -m backend auth hash)
  export DUS_PASSWORD_HASH
  unset DUS_PASSWORD
fi
export DUS_WORKSPACE=${DUS_WORKSPACE:-$PWD/workspace}
echo "run: checking the built-in model (the first time it is converted to safetensors: about 40 s)" >&2
.venv/bin/python -m backend models import builtin >/dev/null 2>&1 || \
  echo "run: could not import the built-in model now; the Build page offers it again" >&2
mkdir -p "$DUS_WORKSPACE/logs"
.venv/bin/python -m backend worker >>"$DUS_WORKSPACE/logs/worker.log" 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null || true' EXIT INT TERM
.venv/bin/streamlit run app.py --server.address "$host" --server.port "${DUS_PORT:-8501}" \
  --server.headless true --browser.gatherUsageStats false
