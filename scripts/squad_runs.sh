#!/usr/bin/env bash
# The SQuAD runs of docs/results.md ("SQuAD v1.1"): the dense model (the teacher), then movement with PLATON scores
# at 10% of the encoder's linear weights, distilled from it (logits and hidden states), as `fineprune sweep` trains
# them from configs/squad_movement.yaml. About 45 and 60 minutes on a 2-core CPU.
#
#   scripts/squad_runs.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]
#
# MODEL_FOLDER: a local copy of sentence-transformers/all-MiniLM-L6-v2. OUT (default runs/squad) gets dense/,
# movement_0.1/, results.md and results.csv. Further --set options reach both runs. Environment:
#   DEVICE      flags that pick the device; default "--set training.use_cpu=true"; DEVICE="" on a GPU.
#   SQUAD_FILE  the SQuAD v1.1 dev file (JSON, optionally gzipped) if not at the configs' task.train_file.
# Resumable: run the same command again after a stop; a finished run is skipped and an unfinished one continues
# from its last checkpoint.
set -euo pipefail
MODEL=${1:?usage: scripts/squad_runs.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]}
OUT=${2:-runs/squad}
shift $(($# < 2 ? $# : 2))
FP=${FINEPRUNE:-fineprune}
read -ra DEVICE_FLAGS <<<"${DEVICE---set training.use_cpu=true}"
# Local paths made absolute: a run folder keeps its settings with absolute paths, and a resumed sweep compares them
# with these.
if [[ -e $MODEL ]]; then MODEL=$(realpath "$MODEL"); fi
DATA=$(realpath -m "${SQUAD_FILE:-$(sed -n 's/^ *train_file: *//p' configs/squad_movement.yaml)}")

# The protocol's flags (docs/results.md, "Protocol"); the config splits SQuAD by article, half for evaluation.
S=(--set "model.name_or_path=$MODEL" --set "task.train_file=$DATA" --set training.bf16=true
  --set training.disable_tqdm=true "${DEVICE_FLAGS[@]}")

"$FP" sweep --config configs/squad_movement.yaml --methods movement --densities 0.1 --out "$OUT" "${S[@]}" "$@"
