#!/usr/bin/env bash
# Set up (packages and Debian's chromium) and run every test, the slow real-model and browser tests included.
#   ./test.sh                 # everything
#   ./test.sh -m "not slow"   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --browser
exec .venv/bin/python -m pytest "$@"
