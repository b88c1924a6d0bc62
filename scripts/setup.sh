#!/usr/bin/env bash
# One-time (and idempotent) set-up of a checkout: apt packages for headless rendering,
# the virtual environment at .venv with pinned dependencies (torch first), the rosidl
# interface build, and the dial_ros package itself. A re-run with nothing changed takes
# about a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
log() { echo "[setup] $*" >&2; }

# 1. Debian packages: EGL/OSMesa for headless MuJoCo rendering, a compiler and CMake for
#    the interface build. Installed only when missing.
APT_PACKAGES=(libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri libosmesa6 cmake g++ make)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Virtual environment with pinned dependencies. torch==2.13.0 goes first: an unpinned
#    torch requirement would pull a multi-GB CUDA build.
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
PY="$VENV/bin/python"
stamp="$VENV/.dial_ros_requirements"
want="$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies into $VENV"
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v 'is ignored' || true
  # a failed install stops here (pipefail: pip's status, not grep's), before the stamp
  # below marks the environment as done
  pip_install() {
    "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v 'is ignored' || true; }
  }
  pip_install torch==2.13.0
  pip_install -r requirements.txt
  # compat mode: a plain .pth path entry, so the generated message modules (installed as
  # a `dial_ros` namespace portion in site-packages) merge with this source package.
  pip_install --no-deps -e . --config-settings editable_mode=compat
  "$PY" -c "import torch, transformers; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  if "$PY" -c "import torchvision" 2>/dev/null; then
    log "torchvision must not be installed (it breaks transformers' processors here)"; exit 1
  fi
  echo "$want" > "$stamp"
fi

# 3. The EfficientNet-Lite0 teacher of dial_ros.model.distill_tower as safetensors (the
#    package never unpickles): converted once from the wheel's tensor-only pickle.
teacher="${DIAL_ROS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dial_ros}/teacher"
teacher="$teacher/efficientnet-lite0-57934424.safetensors"
if [ ! -f "$teacher" ]; then
  log "converting the distillation teacher to $teacher"
  "$PY" scripts/convert_teacher.py --out "$teacher" >/dev/null
fi

# 4. rosidl interfaces from msg/ (skipped when unchanged).
if [ -x scripts/build_interfaces.sh ]; then
  scripts/build_interfaces.sh
fi
log "ready: $VENV"
