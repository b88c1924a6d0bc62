#!/usr/bin/env bash
# Rebuild the bundled checkpoint checkpoints/dial_tiny_gr1 from scratch on this machine:
# record scripted-expert demos of the sim lift task through the recorder, convert them to a
# LeRobot dataset, train tiny DIAL (decoupled warmup, then end to end), copy the weights.
# Every step resumes: a rerun records only missing demos and continues the training run.
#   scripts/build_checkpoint.sh                 # 200 demos, config/train_tiny_lift.yaml
#   DEMOS=50 WORK=work/lift50 OUT= scripts/build_checkpoint.sh    # a run, nothing copied
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY=.venv/bin/python
WORK="${WORK:-work/lift}"
DEMOS="${DEMOS:-200}"
OUT="${OUT-checkpoints/dial_tiny_gr1}"
TRAIN_ARGS=("$@")

"$PY" -m dial_ros.data.record_demos --out "$WORK/demos" --demos "$DEMOS"
if [ ! -f "$WORK/dataset/meta/info.json" ]; then
  "$PY" -m dial_ros.data.convert --bags "$WORK/demos" --out "$WORK/dataset" \
    --embodiment gr1_sim --skip-outcomes fail,discard,unknown
fi
"$PY" -m dial_ros.train --dataset "$WORK/dataset" --out "$WORK/run" \
  --config config/train_tiny_lift.yaml --episodes "$DEMOS" --resume "${TRAIN_ARGS[@]}"
if [ -n "$OUT" ]; then
  rm -rf "$OUT"
  mkdir -p "$OUT"
  # the model only: weights, config (with the dataset's normalisation), VLM files
  cp -r "$WORK/run/checkpoints/latest/"{model.safetensors,dial_config.yaml,vlm} "$OUT/"
  echo "bundled checkpoint: $OUT"
fi
