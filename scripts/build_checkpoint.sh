#!/usr/bin/env bash
# Rebuild the bundled checkpoint checkpoints/dial_tiny_gr1 from scratch on this machine:
# record scripted-expert demos of the sim lift task through the launch and the recorder
# (closed-loop expert, DART noise on the executed command, the clean target as the label),
# convert them to a LeRobot dataset (lossless video), train tiny DIAL (decoupled warmup, then
# end to end) with config/train_tiny_lift.yaml, pick the checkpoint with the best closed-loop
# success on validation seeds, copy it. Every step resumes: a rerun records only missing
# demos, continues the training run and reuses finished selection episodes.
#   scripts/build_checkpoint.sh                 # 200 demos
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
# DART: each episode draws a noise level in [0, NOISE] rad (waist and right arm)
NOISE="${NOISE:-0.05}"
SELECT_EPISODES="${SELECT_EPISODES:-30}"
TRAIN_ARGS=("$@")

"$PY" -m dial_ros.data.record_demos --out "$WORK/demos" --demos "$DEMOS" \
  --noise-std "$NOISE" --noise-random
if [ ! -f "$WORK/dataset/meta/info.json" ]; then
  "$PY" -m dial_ros.data.convert --bags "$WORK/demos" --out "$WORK/dataset" \
    --embodiment gr1_sim --skip-outcomes fail,discard,unknown
fi
"$PY" -m dial_ros.train --dataset "$WORK/dataset" --out "$WORK/run" \
  --config config/train_tiny_lift.yaml --episodes "$DEMOS" --resume "${TRAIN_ARGS[@]}"
"$PY" -m dial_ros.evaluate.select --run "$WORK/run" --episodes "$SELECT_EPISODES"
if [ -n "$OUT" ]; then
  rm -rf "$OUT"
  mkdir -p "$OUT"
  # the model only: weights, config (with the dataset's normalisation), VLM files
  cp -r "$WORK/run/checkpoints/best/"{model.safetensors,dial_config.yaml,vlm} "$OUT/"
  echo "bundled checkpoint: $OUT ($(readlink "$WORK/run/checkpoints/best"))"
fi
