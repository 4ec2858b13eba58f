#!/usr/bin/env bash
# Your own classification data, shown on TREC question classification (docs/results.md, "Your own data: TREC"):
# the dense model (the teacher), movement with PLATON scores distilled at 10% (configs/classification_example.yaml)
# and structured per_kind at 25% (configs/trec_structured.yaml); then the structured model exported compact + ONNX,
# its int8 accuracy, and its latency against the dense model's (CPU time, one thread).
#
#   scripts/trec_runs.sh MODEL_FOLDER [OUT]     MODEL_FOLDER: a local copy of sentence-transformers/all-MiniLM-L6-v2
#
# Resumable: a finished run (its summary.json) is skipped. Environment: FINEPRUNE, DEVICE (scripts/runs_lib.sh).
set -euo pipefail
MODEL=${1:?usage: scripts/trec_runs.sh MODEL_FOLDER [OUT]}
OUT=${2:-runs/trec}
source "$(dirname "$0")/runs_lib.sh"

run dense configs/trec_dense.yaml
run movement_0.1 configs/classification_example.yaml "${T[@]}"
run structured_0.25 configs/trec_structured.yaml "${T[@]}"
compact_and_bench structured_0.25 --seq-len 64   # the config's max_seq_length
