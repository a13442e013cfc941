#!/usr/bin/env bash
# Set up (packages, Debian's chromium and PostgreSQL server) and run every test, the slow real-model and browser
# tests and the PostgreSQL variants included.
#   ./test.sh                 # everything
#   ./test.sh -m "not slow"   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --browser --postgres
exec .venv/bin/python -m pytest "$@"
