#!/usr/bin/env bash
# The README results: DIAL against the GR00T-style baseline and DIAL without the decoupled
# warmup at 50, 100 and 200 demonstrations, each checkpoint picked on validation seeds, each
# evaluated closed loop through the ROS stack on the same seeds (paired), plus the splits and
# the scripted expert, all on the demos recorded through the launch by
# scripts/build_checkpoint.sh (work/lift; DIAL 200 is the bundled checkpoint); then DIAL and
# the GR00T-style baseline on 1000 in-process demos with 0-3 random distractors each
# (SOURCE=sim, work/lift_sim), DIAL on every split. Every step resumes; results land in
# evals/ and evals/results.md.
#   scripts/results.sh                       # EPISODES=50 per row
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY=.venv/bin/python
WORK="${WORK:-work/lift}"
EPISODES="${EPISODES:-50}"
SELECT_EPISODES="${SELECT_EPISODES:-30}"
EVALS="${EVALS:-evals}"
SIM_WORK="${SIM_WORK:-work/lift_sim}"
SOURCE=launch DEMOS=200 WORK="$WORK" OUT= scripts/build_checkpoint.sh >&2
SOURCE=sim DEMOS=1000 WORK="$SIM_WORK" OUT= scripts/build_checkpoint.sh >&2

train() {  # name demos extra-args...  (DATA_WORK: the work folder of the dataset)
  local name="$1" demos="$2" data="${DATA_WORK:-$WORK}"; shift 2
  local run="$data/runs/$name"
  [ "$name" = dial_200 ] && run="$WORK/run"   # build_checkpoint.sh's run of the 200 demos
  "$PY" -m dial_ros.train --dataset "$data/dataset" --out "$run" \
    --config config/train_tiny_lift.yaml --episodes "$demos" --resume "$@" >&2
  "$PY" -m dial_ros.evaluate.select --run "$run" --episodes "$SELECT_EPISODES" >&2
  echo "$run/checkpoints/best"
}

# train's and select's output goes to stderr: stdout carries only the picked checkpoint.
evaluate() {  # label out checkpoint-or-expert splits...
  local label="$1" out="$2" what="$3"; shift 3
  [ -f "$out/results.json" ] && return 0
  local splits=()
  for s in "$@"; do splits+=(--split "$s"); done
  if [ "$what" = expert ]; then
    "$PY" -m dial_ros.evaluate --driver expert --label "$label" --episodes "$EPISODES" \
      --out "$out" "${splits[@]}"
  else
    "$PY" -m dial_ros.evaluate --checkpoint "$what" --label "$label" --episodes "$EPISODES" \
      --out "$out" "${splits[@]}"
  fi
}

ALL=(seen unseen_position unseen_appearance distractors)
DIAL_200="$(train dial_200 200)"
evaluate "DIAL" "$EVALS/dial_200" "$DIAL_200" seen
evaluate "DIAL" "$EVALS/dial_200_splits" "$DIAL_200" "${ALL[@]:1}"
evaluate "GR00T-style" "$EVALS/groot_200" "$(train groot_200 200 --recipe groot)" seen
evaluate "DIAL, no warmup" "$EVALS/nowarm_200" \
  "$(train nowarm_200 200 --first-stage-fraction 0)" seen
for demos in 100 50; do
  evaluate "DIAL" "$EVALS/dial_$demos" "$(train "dial_$demos" "$demos")" seen
  evaluate "GR00T-style" "$EVALS/groot_$demos" \
    "$(train "groot_$demos" "$demos" --recipe groot)" seen
done
evaluate "scripted expert" "$EVALS/expert" expert "${ALL[@]}"
DIAL_1000="$SIM_WORK/run/checkpoints/best"   # trained and selected by build_checkpoint.sh
evaluate "DIAL, clutter demos" "$EVALS/dial_1000" "$DIAL_1000" seen
evaluate "DIAL, clutter demos" "$EVALS/dial_1000_splits" "$DIAL_1000" "${ALL[@]:1}"
evaluate "GR00T-style, clutter demos" "$EVALS/groot_1000" \
  "$(DATA_WORK="$SIM_WORK" train groot_1000 1000 --recipe groot)" seen

{
  "$PY" -m dial_ros.evaluate.table "$EVALS"/dial_200 "$EVALS"/dial_200_splits \
    "$EVALS"/groot_200 "$EVALS"/nowarm_200 \
    "$EVALS"/dial_100 "$EVALS"/groot_100 "$EVALS"/dial_50 "$EVALS"/groot_50 "$EVALS"/expert \
    "$EVALS"/dial_1000 "$EVALS"/dial_1000_splits "$EVALS"/groot_1000
  echo
  for demos in 200 100 50; do
    echo "DIAL - GR00T-style, $demos demos (paired by seed):"
    echo
    "$PY" -m dial_ros.evaluate.compare "$EVALS/dial_$demos" "$EVALS/groot_$demos" \
      --labels DIAL GR00T-style
    echo
  done
  echo "DIAL - GR00T-style, 1000 in-process demos with clutter (paired by seed):"
  echo
  "$PY" -m dial_ros.evaluate.compare "$EVALS/dial_1000" "$EVALS/groot_1000" \
    --labels DIAL GR00T-style
  echo
  echo "DIAL - DIAL without warmup, 200 demos (paired by seed):"
  echo
  "$PY" -m dial_ros.evaluate.compare "$EVALS/dial_200" "$EVALS/nowarm_200" \
    --labels DIAL "no warmup"
} > "$EVALS/results.md"
cat "$EVALS/results.md"
