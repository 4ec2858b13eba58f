#!/usr/bin/env bash
# The MNLI grid of docs/results.md ("MNLI: the full grid"): the dense model, then magnitude, movement (PLATON
# scores), soft movement and L0 (scores started from |W|) at 50%, 10% and 3% of the encoder's linear weights,
# without a teacher and distilled from the dense model, each trained with seeds 42 and 43: 50 runs, about
# 30 minutes each on a 2-core CPU.
#
#   scripts/mnli_grid.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]
#
# MODEL_FOLDER: a local copy of sentence-transformers/all-MiniLM-L6-v2. OUT (default runs/mnli_grid) gets two
# sweep folders, no_teacher/ and distilled/, each with results.md and results.csv. Further --set options reach every
# run. Environment:
#   DEVICE     flags that pick the device; default "--set training.use_cpu=true"; DEVICE="" on a GPU.
#   MNLI_FILE  the GLUE MNLI dev-matched file (TSV, optionally gzipped) if not at the configs' task.train_file.
# Resumable: run the same command again after a stop; finished runs are skipped and an unfinished one continues
# from its last checkpoint (the config saves one per epoch, so each run folder keeps up to 0.5 GB: 20 GB in all).
set -euo pipefail
MODEL=${1:?usage: scripts/mnli_grid.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]}
OUT=${2:-runs/mnli_grid}
shift $(($# < 2 ? $# : 2))
FP=${FINEPRUNE:-fineprune}
read -ra DEVICE_FLAGS <<<"${DEVICE---set training.use_cpu=true}"
# Local paths made absolute: a run folder keeps its settings with absolute paths, and a resumed sweep compares them
# with these.
if [[ -e $MODEL ]]; then MODEL=$(realpath "$MODEL"); fi
DATA=$(realpath -m "${MNLI_FILE:-$(sed -n 's/^ *train_file: *//p' configs/mnli_movement.yaml)}")

# The protocol's flags (docs/results.md, "Protocol"): the MNLI split of 8,000 / 1,815 pairs, bf16 autocast.
S=(--set "model.name_or_path=$MODEL" --set "task.train_file=$DATA" --set task.eval_fraction=0.1849
  --set training.bf16=true --set training.disable_tqdm=true "${DEVICE_FLAGS[@]}")
# The sweep gives each method its settings: movement keeps the config's PLATON scores; magnitude needs no scores;
# soft movement and L0 learn theirs with AdamW, started from |W|, at lr 1e-1 and 5e-2 (docs/results.md's grid
# measured both at 1e-2).
GRID=(--config configs/mnli_movement.yaml --methods magnitude,movement,soft_movement,l0
  --densities 0.5,0.1,0.03 --seeds 42,43)

"$FP" sweep "${GRID[@]}" --no-distill --out "$OUT/no_teacher" "${S[@]}" "$@"
"$FP" sweep "${GRID[@]}" --distill-from "$OUT/no_teacher/dense_seed42" --out "$OUT/distilled" "${S[@]}" "$@"
