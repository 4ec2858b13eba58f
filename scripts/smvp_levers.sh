#!/usr/bin/env bash
# The levers for soft movement and L0, one row each, on the MNLI split of 8,000 / 1,815 pairs (docs/results.md,
# "Protocol"): configs/mnli_smvp.yaml and configs/mnli_l0.yaml (global, scores from |W|; BASELINE below undoes what
# they ship of the levers), 3 epochs, at 10% and 3% of the encoder's linear weights, without a teacher and distilled
# from the dense model (configs/mnli_dense.yaml, trained first). Rows, besides the baseline:
#   freeze       pruning.freeze_weights: the pruned matrices frozen, only scores, biases, LayerNorm and head learn (SMP)
#   normalize    soft movement: pruning.regularization_normalize=loss, lambda 1 (the penalty at most the loss it joins)
#   scoreslr     soft movement: scores_learning_rate 1e-1 instead of 1e-2: with noisy gradients AdamW moves a score
#                far less than its learning rate per update, and at 1e-2 the kept weights stay 83-91% those of the
#                |W| start (magnitude's masks); ten times faster lets the task overturn more of them
#   scoreslr5e-2, scoreslr3e-1  soft movement: scores_learning_rate 5e-2, 3e-1
#   freeze_scoreslr  soft movement: frozen weights and scores_learning_rate 1e-1 together
#   normalize_scoreslr  soft movement: the normalised penalty (as normalize) and scores_learning_rate 1e-1 together:
#                without a teacher the task is not learnt at lr 1e-1: is the penalty (100x the loss) the cause?
#   sgd100, sgd1000  soft movement: scores_update sgd (the paper's accumulation S -= lr * dL/dW' * W, which keeps the
#                |W| factor AdamW divides out), lr 100 and 1000: raw score gradients are ~1e-6..1e-4 per update
#   dense_start  L0: one epoch of dense fine-tuning (dense_1epoch/), then two epochs of L0 from it; the in-run warm-up
#                is no dense one (L0 samples its gates from the first step, only the Lagrangian waits)
#   temperature  L0: pruning.l0_temperature=1/3 (the paper's 2/3): sampled gates nearer 0 or 1, as at evaluation
#   scoreslr     L0: scores_learning_rate 5e-2: AdamW moves a gate's score by at most its learning rate per update,
#                and at 1e-2 the gates' expected density lags the schedule (0.84 open when the target is 0.42)
#   scoreslr1e-1 L0: scores_learning_rate 1e-1
#   no_hidden    with the teacher only: distillation.alpha_hidden=0 (the logits alone; the configs add hidden states)
#   local        pruning.scope=local (the configs select globally)
# 78 runs with one seed (15 to 20 minutes each on a 2-core CPU, two side by side at one thread each). Results:
# OUT/results.md, one line per run.
#
#   scripts/smvp_levers.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]
#
# MODEL_FOLDER: a local copy of sentence-transformers/all-MiniLM-L6-v2; OUT defaults to runs/smvp_levers. Further
# --set options reach every run. Environment:
#   DEVICE     flags that pick the device; default "--set training.use_cpu=true"; DEVICE="" on a GPU.
#   MNLI_FILE  the GLUE MNLI dev-matched file (TSV, optionally gzipped) if not at the configs' task.train_file.
#   SEEDS      training seeds, space-separated (default "42"); each pruned run is trained once per seed.
#   DENSITIES  target densities, space-separated (default "0.1 0.03").
#   TEACHERS   "no_teacher teacher" (default), or one of them: the runs without a teacher, with it, or both.
#   PYTHON     the Python that writes results.md (default python3).
# Resumable: a run whose summary.json exists is skipped; an unfinished one starts again (no checkpoints are kept).
set -euo pipefail
MODEL=${1:?usage: scripts/smvp_levers.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]}
OUT=${2:-runs/smvp_levers}
shift $(($# < 2 ? $# : 2))
read -ra SEED_LIST <<<"${SEEDS:-42}"
read -ra DENSITY_LIST <<<"${DENSITIES:-0.1 0.03}"
read -ra TEACHER_LIST <<<"${TEACHERS:-no_teacher teacher}"
source "$(dirname "$0")/runs_lib.sh"
DATA=$(realpath -m "${MNLI_FILE:-$(sed -n 's/^ *train_file: *//p' configs/mnli_smvp.yaml)}")
# The protocol's flags besides runs_lib.sh's: the 8,000 / 1,815 split, 3 epochs.
S+=(--set "task.train_file=$DATA" --set task.eval_fraction=0.1849 --set training.num_train_epochs=3)
NO_TEACHER=(--set distillation=null)
# Each method's baseline: its config as it was before the levers that won were shipped in it.
declare -A BASELINE=([smvp]="--set pruning.freeze_weights=false --set pruning.scores_learning_rate=0.01"
  [l0]="--set pruning.scores_learning_rate=0.01")

# lever METHOD NAME [--set ...]: the lever's runs of one method at each density, without and with the teacher, each
# seed (no_hidden changes the teacher's loss: with the teacher only)
lever() {
  local method=$1 name=$2 density seed teacher base
  shift 2
  read -ra base <<<"${BASELINE[$method]}"
  for seed in "${SEED_LIST[@]}"; do
    for density in "${DENSITY_LIST[@]}"; do
      for teacher in "${TEACHER_LIST[@]}"; do
        [[ $name == no_hidden && $teacher == no_teacher ]] && continue
        local flags=("${T[@]}")
        [[ $teacher == teacher ]] || flags=("${NO_TEACHER[@]}")
        run "${method}_${name}_${density}_${teacher}_seed$seed" "configs/mnli_$method.yaml" "${flags[@]}" \
          "${base[@]}" --set "pruning.final_density=$density" --set "training.seed=$seed" "$@"
      done
    done
  done
}

run dense configs/mnli_dense.yaml "$@"
run dense_1epoch configs/mnli_dense.yaml --set training.num_train_epochs=1 "$@"
for method in smvp l0; do
  lever "$method" baseline "$@"
  lever "$method" freeze --set pruning.freeze_weights=true "$@"
  lever "$method" no_hidden --set distillation.alpha_hidden=0 "$@"
  lever "$method" local --set pruning.scope=local "$@"
done
lever smvp normalize --set pruning.regularization_normalize=loss --set pruning.regularization_lambda=1 "$@"
lever smvp scoreslr --set pruning.scores_learning_rate=0.1 "$@"
lever smvp scoreslr5e-2 --set pruning.scores_learning_rate=0.05 "$@"
lever smvp scoreslr3e-1 --set pruning.scores_learning_rate=0.3 "$@"
lever smvp freeze_scoreslr --set pruning.freeze_weights=true --set pruning.scores_learning_rate=0.1 "$@"
lever smvp normalize_scoreslr --set pruning.regularization_normalize=loss --set pruning.regularization_lambda=1 \
  --set pruning.scores_learning_rate=0.1 "$@"
lever smvp sgd100 --set pruning.scores_update=sgd --set pruning.scores_learning_rate=100 "$@"
lever smvp sgd1000 --set pruning.scores_update=sgd --set pruning.scores_learning_rate=1000 "$@"
lever l0 dense_start --set "model.name_or_path=$OUT/dense_1epoch" --set training.num_train_epochs=2 "$@"
lever l0 temperature --set pruning.l0_temperature=0.3333333333333333 "$@"
lever l0 scoreslr --set pruning.scores_learning_rate=0.05 "$@"
lever l0 scoreslr1e-1 --set pruning.scores_learning_rate=0.1 "$@"

"${PYTHON:-python3}" - "$OUT" >"$OUT/results.md" <<'TABLE'
import json, pathlib, sys

print("| run | accuracy | density |\n| --- | --- | --- |")
for summary in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    s = json.loads(summary.read_text())
    print(f"| {summary.parent.name} | {100 * s['metrics']['accuracy']:.2f} | {100 * s['sparsity']['density']:.2f}% |")
TABLE
cat "$OUT/results.md"
