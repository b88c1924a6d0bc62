#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, then run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export OMP_NUM_THREADS=1
.venv/bin/python -m flake8
.venv/bin/python -m pytest "$@"
