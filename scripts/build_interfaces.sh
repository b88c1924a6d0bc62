#!/usr/bin/env bash
# Build the rosidl interfaces in msg/ (and srv/) with plain CMake + make in build/interfaces
# and install them into the project's venv (.venv), where they import and pub/sub with no
# environment variables. Idempotent; returns at once when msg/, srv/, CMakeLists.txt,
# package.xml, this script and the venv's pinned dependencies (setup.sh's stamp) are
# unchanged since the last successful build.
#
# The venv build passes -DDIAL_ROS_INSTALL_PYTHON_PACKAGE=OFF: the generated modules land in
# site-packages/dial_ros/ without an __init__.py (a namespace portion that the editable
# source package merges in), and no second copy of the source package is installed.
#
# Usage: scripts/build_interfaces.sh [--force]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
BUILD="$ROOT/build/interfaces"
STAMP="$VENV/.dial_ros_interfaces"
log() { echo "[build_interfaces] $*" >&2; }

[ -x "$PY" ] || { log "no venv at $VENV (run scripts/setup.sh)"; exit 1; }

PURELIB="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MARKER="$PURELIB/dial_ros/msg/_latent_tensor.py"

inputs_hash() {
  {
    find msg srv -type f 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum
    sha256sum CMakeLists.txt package.xml scripts/build_interfaces.sh
    cat "$VENV/.dial_ros_requirements" 2>/dev/null || true  # setup.sh's dependency stamp
    echo "$VENV"
  } | sha256sum | cut -d' ' -f1
}
want="$(inputs_hash)"
if [ "${1:-}" != "--force" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] \
    && [ -f "$MARKER" ] && [ ! -e "$PURELIB/dial_ros/__init__.py" ]; then
  exit 0
fi
start_ns=$(date +%s%N)
mkdir -p "$ROOT/build"
LOG="$ROOT/build/interfaces.log"

# 1. The ROS wheels' exported CMake files name the wheel build machine's Python and numpy
#    include directories; point them at this venv's (a no-op once rewritten).
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INCLUDE="$("$PY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t exports < <(grep -rlF --include='*Export.cmake' /opt/python/cp311-cp311 \
  "$VENV/share" 2>/dev/null || true)
if ((${#exports[@]})); then
  log "rewriting /opt/python paths in ${#exports[@]} exported CMake files"
  sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP_INCLUDE#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PY_INCLUDE#g" \
    "${exports[@]}"
fi

# 2. Configure (a cache made for another prefix, e.g. a moved checkout, starts over).
if [ -f "$BUILD/CMakeCache.txt" ] \
    && ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
export VIRTUAL_ENV="$VENV" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
log "building interfaces in ${BUILD#"$ROOT"/}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
  -DDIAL_ROS_INSTALL_PYTHON_PACKAGE=OFF >"$LOG" 2>&1 \
  || { cat "$LOG" >&2; exit 1; }

# 3. Build and install; then remove what an earlier build installed and this one did not
#    (a deleted or renamed message).
old_manifest=""
if [ -f "$BUILD/install_manifest.txt" ]; then
  old_manifest="$(cat "$BUILD/install_manifest.txt")"
fi
{ cmake --build "$BUILD" -- -j"$(nproc)" && cmake --install "$BUILD"; } >>"$LOG" 2>&1 \
  || { tail -n 60 "$LOG" >&2; exit 1; }
if [ -n "$old_manifest" ]; then
  comm -23 <(LC_ALL=C sort <<<"$old_manifest") \
    <(LC_ALL=C sort "$BUILD/install_manifest.txt") | while read -r f; do
    case "$f" in "$VENV"/*) rm -f "$f" ;; esac
  done
fi

# 4. The generated types import from anywhere, with no environment variables.
(cd / && env -u VIRTUAL_ENV -u AMENT_PREFIX_PATH -u CMAKE_PREFIX_PATH "$PY" -c \
  'from dial_ros.msg import LatentTensor, ActionChunk; LatentTensor(); ActionChunk()') \
  || { log "the generated interfaces do not import"; exit 1; }
echo "$want" >"$STAMP"
log "done in $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
