#!/usr/bin/env bash
# Issue 23's levers for SQuAD v1.1, one row each, on the split by article of docs/results.md ("Protocol": the
# configs' eval_fraction 0.5, 24 articles to train on, the other 24 to evaluate). A row is configs/squad_movement.yaml
# (movement with PLATON scores at 10% of the encoder's linear weights, 3 epochs, distilled from the dense model's
# logits and hidden states) with one setting changed; each pruned run is taught by, and its F1 compared with, the
# dense run trained with the same budget (configs/squad_dense.yaml):
#   movement_0.1               the baseline, as shipped (teacher dense/, 3 epochs)
#   movement_0.1_from_dense    pruning starts from the fine-tuned dense model (model.name_or_path=OUT/dense), whose
#                              span head is already learnt, instead of the pretrained encoder
#   movement_0.1_teacher_only  the teacher's loss alone (oBERT): alpha_ce 0, alpha_distil 1, temperature 2; the
#                              hidden states kept
#   movement_0.1_no_hidden     distillation.alpha_hidden 0: the teacher's logits alone, with the labels
#   movement_0.1_lr3e-5, _lr5e-5  learning rate 3e-5, 5e-5 (the configs' 1e-4); the teacher is dense/
#   movement_0.1_global        pruning.scope global: one Top-v over all matrices (the config's is per matrix)
#   movement_0.03              the baseline at 3%
#   movement_0.1_seed43        the baseline, training seed 43
#   movement_0.1_seq256        max_seq_length 256, doc_stride 128 (cheaper updates), teacher and reference
#                              dense_seq256/ (the dense model on the same windows)
#   movement_0.1_10ep          10 epochs (the paper's), teacher and reference dense_10ep/ (the dense model, 10 epochs)
#   structured_0.25            configs/squad_structured.yaml (heads and FFN neurons, 25% each, 3 epochs, teacher
#                              dense/), exported compact with its ONNX graphs (structured_0.25_compact/), the int8
#                              graph's EM/F1 (structured_0.25_compact_int8.json) and its latency against dense/ at 384
#                              tokens, batch 1 and 32 (bench.md)
# 15 runs: 3 dense, 12 pruned. On a 2-core CPU at 384 tokens a dense run of 3 epochs took 19 minutes (two threads)
# and a pruned one 41 to 44 (one thread, with another run beside it; docs/results.md); 10 epochs take about 3.3 times
# that, 256 tokens about two thirds: most of a day in all. On a GPU (DEVICE=) each run takes minutes.
# Results: OUT/results.md, one line per run.
#
#   scripts/squad_levers.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]
#
# MODEL_FOLDER: a local copy of sentence-transformers/all-MiniLM-L6-v2; OUT defaults to runs/squad_levers. Further
# --set options reach every run, after the row's own. Environment:
#   DEVICE      flags that pick the device; default "--set training.use_cpu=true"; DEVICE="" on a GPU.
#   SQUAD_FILE  the SQuAD v1.1 dev file (JSON, optionally gzipped) if not at the configs' task.train_file.
#   FINEPRUNE   the fineprune command (default fineprune); PYTHON the Python that writes results.md (default python3).
# Resumable: a run whose summary.json exists is skipped; a stopped one continues from its last checkpoint (one per
# epoch, deleted when the run finishes).
set -euo pipefail
MODEL=${1:?usage: scripts/squad_levers.sh MODEL_FOLDER [OUT] [--set KEY=VALUE ...]}
OUT=${2:-runs/squad_levers}
shift $(($# < 2 ? $# : 2))
EXTRA=("$@")
source "$(dirname "$0")/runs_lib.sh"
DATA=$(realpath -m "${SQUAD_FILE:-$(sed -n 's/^ *train_file: *//p' configs/squad_movement.yaml)}")
# The protocol's flags besides runs_lib.sh's: the data, and a checkpoint per epoch (runs of up to 3 hours resume).
S+=(--set "task.train_file=$DATA" --set training.save_strategy=epoch)
ROWS=()  # run, then the dense run it is compared with

dense() {  # dense NAME [--set ...]: configs/squad_dense.yaml with the row's settings; its own reference
  local name=$1; shift
  run "$name" configs/squad_dense.yaml "$@" "${EXTRA[@]}"
  ROWS+=("$name" "$name")
}

pruned() {  # pruned NAME DENSE CONFIG [--set ...]: NAME distilled from OUT/DENSE, its teacher and reference
  local name=$1 reference=$2 config=$3; shift 3
  run "$name" "$config" --set "distillation.teacher=$OUT/$reference" "$@" "${EXTRA[@]}"
  ROWS+=("$name" "$reference")
}

MOVEMENT=configs/squad_movement.yaml
EPOCHS10=(--set training.num_train_epochs=10)
SEQ256=(--set task.max_seq_length=256 --set task.doc_stride=128)

dense dense
pruned movement_0.1 dense "$MOVEMENT"
pruned movement_0.1_from_dense dense "$MOVEMENT" --set "model.name_or_path=$OUT/dense"
pruned movement_0.1_teacher_only dense "$MOVEMENT" --set distillation.alpha_ce=0 --set distillation.alpha_distil=1 \
  --set distillation.temperature=2
pruned movement_0.1_no_hidden dense "$MOVEMENT" --set distillation.alpha_hidden=0
pruned movement_0.1_lr3e-5 dense "$MOVEMENT" --set training.learning_rate=3e-5
pruned movement_0.1_lr5e-5 dense "$MOVEMENT" --set training.learning_rate=5e-5
pruned movement_0.1_global dense "$MOVEMENT" --set pruning.scope=global
pruned movement_0.03 dense "$MOVEMENT" --set pruning.final_density=0.03
pruned movement_0.1_seed43 dense "$MOVEMENT" --set training.seed=43
dense dense_seq256 "${SEQ256[@]}"
pruned movement_0.1_seq256 dense_seq256 "$MOVEMENT" "${SEQ256[@]}"
dense dense_10ep "${EPOCHS10[@]}"
pruned movement_0.1_10ep dense_10ep "$MOVEMENT" "${EPOCHS10[@]}"
pruned structured_0.25 dense configs/squad_structured.yaml
compact_and_bench structured_0.25 --seq-len 384   # the configs' max_seq_length

"${PYTHON:-python3}" - "$OUT" "${ROWS[@]}" >"$OUT/results.md" <<'TABLE'
import json, pathlib, sys

out, rows = pathlib.Path(sys.argv[1]), sys.argv[2:]
print("| run | compared with | EM | F1 | F1 of dense | remaining weights |\n| --- | --- | --- | --- | --- | --- |")
for name, reference in zip(rows[::2], rows[1::2]):
    metrics, sparsity = (json.loads((out / name / "summary.json").read_text())[k] for k in ("metrics", "sparsity"))
    dense_f1 = json.loads((out / reference / "summary.json").read_text())["metrics"]["f1"]
    print(
        f"| {name} | {reference} | {metrics['exact_match']:.2f} | {metrics['f1']:.2f} | "
        f"{100 * metrics['f1'] / dense_f1:.1f}% | {100 * sparsity['density']:.2f}% |"
    )
TABLE
cat "$OUT/results.md"
