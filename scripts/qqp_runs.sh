#!/usr/bin/env bash
# QQP with the shipped recipes (docs/results.md, "QQP"): the dense model (the teacher), movement with PLATON scores
# distilled at 10% (seeds 42 and 43) and 3%, magnitude at 10%, structured per_kind at 25%; then the structured model
# exported compact + ONNX, its int8 accuracy, and its latency against the dense model's (CPU time, one thread).
#
#   scripts/qqp_runs.sh MODEL_FOLDER [OUT]      MODEL_FOLDER: a local copy of sentence-transformers/all-MiniLM-L6-v2
#
# Resumable: a finished run (its summary.json) is skipped. Environment: FINEPRUNE, DEVICE (scripts/runs_lib.sh).
set -euo pipefail
MODEL=${1:?usage: scripts/qqp_runs.sh MODEL_FOLDER [OUT]}
OUT=${2:-runs/qqp}
source "$(dirname "$0")/runs_lib.sh"

run dense configs/qqp_dense.yaml
run movement_0.1_seed42 configs/qqp_movement.yaml "${T[@]}"
run structured_0.25 configs/qqp_structured.yaml "${T[@]}"
compact_and_bench structured_0.25
run movement_0.1_seed43 configs/qqp_movement.yaml "${T[@]}" --set training.seed=43
run movement_0.03 configs/qqp_movement.yaml "${T[@]}" --set pruning.final_density=0.03
run magnitude_0.1 configs/qqp_magnitude.yaml "${T[@]}" --set training.num_train_epochs=3
