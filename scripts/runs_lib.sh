# Shared by scripts/qqp_runs.sh, trec_runs.sh, smvp_levers.sh and squad_levers.sh (sourced, not run): the protocol's
# flags, a resumable run, and the structured model's export and timing.
# Needs MODEL and OUT set; FINEPRUNE (default fineprune) and DEVICE (default "--set training.use_cpu=true"; "" on a
# GPU) may be set in the environment.
FP=${FINEPRUNE:-fineprune}
read -ra DEVICE_FLAGS <<<"${DEVICE---set training.use_cpu=true}"
if [[ -e $MODEL ]]; then MODEL=$(realpath "$MODEL"); fi
S=(--set "model.name_or_path=$MODEL" --set training.bf16=true --set training.save_strategy=no
  --set training.disable_tqdm=true "${DEVICE_FLAGS[@]}")
T=(--set "distillation.teacher=$OUT/dense")
mkdir -p "$OUT"

# run NAME CONFIG [--set ...]: train unless NAME already finished; its summary goes to OUT/NAME.json. S saves no
# checkpoints, so a stopped run starts again; a script that saves them (S+=(--set training.save_strategy=epoch), for
# runs of hours) continues a stopped run from its last one, and a finished run's checkpoint is deleted.
run() {
  local name=$1 config=$2 start=--overwrite note=""; shift 2
  if [[ -f $OUT/$name/summary.json ]]; then echo "skip $name (done)"; return; fi
  if compgen -G "$OUT/.$name.partial/checkpoint-*/trainer_state.json" > /dev/null; then
    start=--resume note=" (from its last checkpoint)"
  fi
  echo "== $name $(date +%T)$note"
  "$FP" train --config "$config" "${S[@]}" "$@" --output-dir "$OUT/$name" "$start" > "$OUT/$name.json"
  rm -rf "$OUT/$name"/checkpoint-*
  cat "$OUT/$name.json"
}

compact_and_bench() {  # compact_and_bench NAME [bench options]: export NAME --compact --onnx, time it against dense
  local name=$1; shift
  if [[ ! -d $OUT/${name}_compact ]]; then
    "$FP" export "$OUT/$name" --compact --onnx --out "$OUT/${name}_compact"
  fi
  "$FP" eval "$OUT/${name}_compact" --onnx-quantized > "$OUT/${name}_compact_int8.json"
  "$FP" bench "$OUT/dense" "$OUT/${name}_compact" --batch-sizes 1,32 --threads 1 --clock cpu "$@" > "$OUT/bench.md"
  cat "$OUT/${name}_compact_int8.json" "$OUT/bench.md"
}
