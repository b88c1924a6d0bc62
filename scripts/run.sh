#!/usr/bin/env bash
# The README's run command: set up (idempotent), then the humanoid launch on the embedded sim.
# Arguments are launch arguments, e.g.  scripts/run.sh duration:=30 control_rate_hz:=500
# Episodes one after another with a video each (episodes:=true) unless given episodes:=false.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/dial-ros-launch dial_ros humanoid.launch.py episodes:=true "$@"
