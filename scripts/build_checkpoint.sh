#!/usr/bin/env bash
# Rebuild the bundled checkpoint checkpoints/dial_tiny_gr1 from scratch on this machine:
# scripted-expert demos of the sim lift task (closed-loop expert, DART noise on the executed
# command, the clean target as the label), a LeRobot dataset (lossless video), the frozen
# ViT's token cache, tiny DIAL trained with config/train_tiny_lift.yaml (decoupled warmup,
# then end to end), the checkpoint with the best closed-loop success on validation seeds,
# copied, and its foresight image decoder trained. Every step resumes: a rerun reuses
# finished demos, cache files, the training run and finished selection episodes.
#   scripts/build_checkpoint.sh      # 200 demos recorded through the launch and the recorder
#   SOURCE=sim DEMOS=1000 WORK=work/lift_sim OUT= scripts/build_checkpoint.sh
#       # 1000 in-process demos with 0-3 random distractors each, nothing copied (a results row)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY=.venv/bin/python
SOURCE="${SOURCE:-launch}"         # launch: through the ROS launch; sim: in process
WORK="${WORK:-work/lift}"
DEMOS="${DEMOS:-200}"
OUT="${OUT-checkpoints/dial_tiny_gr1}"
# DART: each episode draws a noise level in [0, NOISE] rad (waist and right arm)
NOISE="${NOISE:-0.05}"
CLUTTER="${CLUTTER:-3}"            # SOURCE=sim: up to this many random distractors
WORKERS="${WORKERS:-2}"
SELECT_EPISODES="${SELECT_EPISODES:-30}"
TRAIN_ARGS=("$@")

if [ "$SOURCE" = launch ]; then
  "$PY" -m dial_ros.data.record_demos --out "$WORK/demos" --demos "$DEMOS" \
    --noise-std "$NOISE" --noise-random
  if [ ! -f "$WORK/dataset/meta/info.json" ]; then
    "$PY" -m dial_ros.data.convert --bags "$WORK/demos" --out "$WORK/dataset" \
      --embodiment gr1_sim --skip-outcomes fail,discard,unknown
  fi
elif [ ! -f "$WORK/dataset/meta/info.json" ]; then
  rm -rf "$WORK/dataset"   # an interrupted generation leaves no usable episodes
  "$PY" -m dial_ros.data.sim_demos --out "$WORK/dataset" --demos "$DEMOS" --seed 20000 \
    --noise-std "$NOISE" --noise-random --clutter "$CLUTTER" --workers "$WORKERS"
fi
# the frozen ViT's tokens with WORKERS processes (any checkpoint with the same tower names
# the same cache folder; without one, training encodes them on one core)
if [ -f checkpoints/dial_tiny_gr1/model.safetensors ]; then
  "$PY" -m dial_ros.data.token_cache --dataset "$WORK/dataset" \
    --checkpoint checkpoints/dial_tiny_gr1 --workers "$WORKERS"
fi
"$PY" -m dial_ros.train --dataset "$WORK/dataset" --out "$WORK/run" \
  --config config/train_tiny_lift.yaml --episodes "$DEMOS" --resume "${TRAIN_ARGS[@]}"
"$PY" -m dial_ros.evaluate.select --run "$WORK/run" --episodes "$SELECT_EPISODES" \
  --workers "$WORKERS"
if [ -n "$OUT" ]; then
  rm -rf "$OUT"
  mkdir -p "$OUT"
  # the model only: weights, config (with the dataset's normalisation), VLM files
  cp -r "$WORK/run/checkpoints/best/"{model.safetensors,dial_config.yaml,vlm} "$OUT/"
  echo "bundled checkpoint: $OUT ($(readlink "$WORK/run/checkpoints/best"))"
  # the foresight image decoder beside it (foresight_view node); FORESIGHT_VAL: held-out
  # episodes for its PSNR metrics (none: not measured)
  "$PY" -m dial_ros.train.foresight_decoder --dataset "$WORK/dataset" --episodes "$DEMOS" \
    --checkpoint "$OUT" ${FORESIGHT_VAL:+--val-dataset "$FORESIGHT_VAL"}
fi
