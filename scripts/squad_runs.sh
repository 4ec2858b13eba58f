#!/usr/bin/env bash
# The SQuAD runs of docs/results.md ("SQuAD v1.1"): the dense model (the teacher), then movement with PLATON scores
# at 10% of the encoder's linear weights, distilled from it (logits and hidden states). About 45 and 60 minutes on
# a 2-core CPU.
#
#   scripts/squad_runs.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]
#
# MODEL_FOLDER: a local copy of sentence-transformers/all-MiniLM-L6-v2; OUT defaults to runs/squad. Further --set
# options reach both runs. Environment:
#   DEVICE      flags that pick the device; default "--set training.use_cpu=true"; DEVICE="" on a GPU.
#   SQUAD_FILE  the SQuAD v1.1 dev file (JSON, optionally gzipped) if not at the configs' task.train_file.
# Resumable: a finished run (summary.json) is skipped; an unfinished one continues from its last checkpoint.
set -euo pipefail
MODEL=${1:?usage: scripts/squad_runs.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]}
OUT=${2:-runs/squad}
shift $(($# < 2 ? $# : 2))
FP=${FINEPRUNE:-fineprune}
read -ra DEVICE_FLAGS <<<"${DEVICE---set training.use_cpu=true}"

# The protocol's flags (docs/results.md, "Protocol"); the configs split SQuAD by article, half for evaluation.
S=(--set "model.name_or_path=$MODEL" --set training.bf16=true --set training.disable_tqdm=true "${DEVICE_FLAGS[@]}")
if [[ -n ${SQUAD_FILE:-} ]]; then S+=(--set "task.train_file=$SQUAD_FILE"); fi

run() { # run NAME CONFIG [--set ...]: train NAME unless it finished, resuming it if it has a checkpoint
  local name=$1 config=$2
  shift 2
  if [[ -f $OUT/$name/summary.json ]]; then
    echo "$name: finished earlier, skipped"
    return
  fi
  local again=--overwrite # killed before its first checkpoint: nothing worth keeping
  if compgen -G "$OUT/$name/checkpoint-*" >/dev/null; then again=--resume; fi
  "$FP" train --config "$config" "${S[@]}" "$@" --output-dir "$OUT/$name" "$again"
}
run dense configs/squad_dense.yaml "$@"
run movement_0.1 configs/squad_movement.yaml --set "distillation.teacher=$OUT/dense" "$@"
