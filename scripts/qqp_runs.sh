#!/usr/bin/env bash
# QQP with the shipped recipes (docs/results.md, "QQP"): the dense model (the teacher), movement with PLATON scores
# distilled at 10% (seeds 42 and 43) and 3%, magnitude at 10%, structured per_kind at 25%; then the structured model
# exported compact + ONNX and timed against the dense one. Resumable: a finished run (summary.json) is skipped.
#   scripts/qqp_runs.sh MODEL_FOLDER [OUT]      e.g. MODEL_FOLDER = a local all-MiniLM-L6-v2
set -euo pipefail
MODEL=${1:?usage: scripts/qqp_runs.sh MODEL_FOLDER [OUT]}
OUT=${2:-runs/qqp}
FP=${FINEPRUNE:-fineprune}
S=(--set "model.name_or_path=$MODEL" --set training.bf16=true --set training.use_cpu=true
   --set training.save_strategy=no --set training.disable_tqdm=true)
T=(--set "distillation.teacher=$OUT/dense")

run() {  # run NAME CONFIG [--set ...]: train unless NAME already finished
  local name=$1 config=$2; shift 2
  if [[ -f $OUT/$name/summary.json ]]; then echo "skip $name (done)"; return; fi
  echo "== $name $(date +%T)"
  "$FP" train --config "$config" "${S[@]}" "$@" --output-dir "$OUT/$name" --overwrite > "$OUT/$name.json"
  cat "$OUT/$name.json"
}
mkdir -p "$OUT"
run dense configs/qqp_dense.yaml
run movement_0.1_seed42 configs/qqp_movement.yaml "${T[@]}"
run structured_0.25 configs/qqp_structured.yaml "${T[@]}"
run movement_0.1_seed43 configs/qqp_movement.yaml "${T[@]}" --set training.seed=43
run movement_0.03 configs/qqp_movement.yaml "${T[@]}" --set pruning.final_density=0.03
run magnitude_0.1 configs/qqp_magnitude.yaml "${T[@]}" --set training.num_train_epochs=3
"$FP" export "$OUT/structured_0.25" --compact --onnx --out "$OUT/structured_0.25_compact" --overwrite
"$FP" bench "$OUT/dense" "$OUT/structured_0.25_compact" --batch-sizes 1,32 --threads 1 --clock cpu > "$OUT/bench.md"
cat "$OUT/bench.md"
