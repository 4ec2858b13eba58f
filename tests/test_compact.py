"""The compact export: empty heads and FFN neurons (and no others) are removed, the smaller model gives the masked
model's logits for every architecture and method, and its folder loads with trust_remote_code where fineprune cannot
be imported; `fineprune export --compact` end to end on a tiny run."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ARCHS, finish, invoke, lively, tiny_model, with_biases
from tiny_assets import base_config, mnli_rows, one_thread, vocabulary, write_mnli_tsv, write_tiny_bert
from transformers import AutoModelForSequenceClassification, BertConfig, BertForQuestionAnswering

import fineprune as fp
from fineprune import layouts
from fineprune.errors import UsageError
from fineprune.export.compact import MODELING_FILE, compact, compact_plan, save_compact

METHODS = ["magnitude", "movement", "soft_movement", "l0"]


def tiny(arch: str) -> torch.nn.Module:
    """A tiny random model whose logits are large enough for a wrong head to show (see conftest.lively)."""
    return lively(tiny_model(arch))


HEADS, HEAD_DIM, FFN = 4, 8, 64
TOLERANCE = 1e-4


def pruned(model: torch.nn.Module, method: str) -> torch.nn.Module:
    """``model`` fine-pruned to the end of its schedule in heads and neurons, with spread-out learned scores."""
    density = {"final_density": 0.4} if method in ("magnitude", "movement") else {}
    config = fp.PruningConfig(
        method=method, structure="heads_neurons", warmup_steps=2, cooldown_steps=2, final_threshold=0.5, **density
    )
    fp.prepare(model, config)
    return finish(model).eval()


def kept_groups_from_masks(model: torch.nn.Module) -> list[dict]:
    """Per layer, the heads and neurons with a nonzero mask entry in some matrix, read from the pruner's masks in
    the order of its targets (query, key, value, attention output, FFN in, FFN out per layer)."""
    masks = fp.get_pruner(model).binary_masks()
    plan = []
    for layer in range(len(masks) // 6):
        q, k, v, o, f_in, f_out = masks[6 * layer : 6 * layer + 6]
        heads = [
            h
            for h in range(HEADS)
            if any(m[h * HEAD_DIM : (h + 1) * HEAD_DIM].any() for m in (q, k, v))
            or o[:, h * HEAD_DIM : (h + 1) * HEAD_DIM].any()
        ]
        neurons = [j for j in range(FFN) if f_in[j].any() or f_out[:, j].any()]
        plan.append({"heads": heads, "neurons": neurons or [0]})
    return plan


def logits_of(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_compact_model_equals_the_masked_model(arch, method, batch):
    model = pruned(tiny(arch), method)
    masked, expected_plan = logits_of(model, batch), kept_groups_from_masks(model)
    baked = fp.bake(model)
    assert compact_plan(baked) == expected_plan
    smaller = compact(baked)
    assert (logits_of(smaller, batch) - masked).abs().max() <= TOLERANCE
    assert [len(layer["heads"]) for layer in expected_plan] != [HEADS, HEADS]  # something was removed
    layers = layouts.encoder_layers(smaller)
    for block, layer in zip(layers, expected_plan, strict=True):
        linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
        f_in, f_out = linears[-2:]
        assert f_in.out_features == f_out.in_features == len(layer["neurons"])
        if not layer["heads"]:  # no attention left: only the FFN's two Linear layers (see the test below)
            assert len(linears) == 2
            continue
        q, _, _, o, _, _ = (block.get_submodule(p) for p in layouts.block_linears(block))
        assert q.weight.shape == (len(layer["heads"]) * HEAD_DIM, 32) and o.weight.shape == (32, q.out_features)
        attention = layouts.attention_module(block, layouts.block_linears(block))
        counts = [getattr(attention, a) for a in layouts.HEAD_COUNT_ATTRIBUTES if hasattr(attention, a)]
        assert counts == [len(layer["heads"])]
    assert sum(p.numel() for p in smaller.parameters()) < sum(p.numel() for p in baked.parameters())


def zero_groups(
    model, layer: int, heads=(), heads_in_qkv=(), heads_in_output=(), neurons=(), neurons_in=(), neurons_out=()
):
    """Set to zero, in one layer, the weights of heads (neurons) in all their matrices, or in some only: Q, K and V
    (FFN-in), or the attention output (FFN-out)."""
    block = layouts.encoder_layers(model)[layer]
    q, k, v, o, f_in, f_out = (block.get_submodule(p).weight for p in layouts.block_linears(block))
    with torch.no_grad():
        for h in (*heads, *heads_in_qkv):
            for matrix in (q, k, v):
                matrix[h * HEAD_DIM : (h + 1) * HEAD_DIM] = 0
        for h in (*heads, *heads_in_output):
            o[:, h * HEAD_DIM : (h + 1) * HEAD_DIM] = 0
        for j in (*neurons, *neurons_in):
            f_in[j] = 0
        for j in (*neurons, *neurons_out):
            f_out[:, j] = 0


@pytest.mark.parametrize("arch", ARCHS)
def test_only_groups_empty_in_every_matrix_are_removed(arch, batch):
    """A stock model with hand-made zeros: a head zero in Q, K, V only or in the output only stays, a head zero
    everywhere goes; the same for neurons; a layer whose heads are all empty keeps none, whose neurons are all empty
    keeps its first one."""
    model = tiny(arch)
    zero_groups(model, 0, heads=[1, 3], heads_in_qkv=[2], heads_in_output=[0], neurons=[5, 9], neurons_in=[7])
    zero_groups(model, 0, neurons_out=[11])
    zero_groups(model, 1, heads=range(HEADS), neurons=range(FFN))
    plan = compact_plan(model)
    assert plan == [
        {"heads": [0, 2], "neurons": [j for j in range(FFN) if j not in (5, 9)]},
        {"heads": [], "neurons": [0]},
    ]
    smaller = compact(model)
    assert (logits_of(smaller, batch) - logits_of(model, batch)).abs().max() <= TOLERANCE


@pytest.mark.parametrize("arch", ARCHS)
def test_a_layer_without_heads_loses_its_attention(arch, batch):
    """Layer 1's heads all empty (their biases are not): the compact layer keeps no query, key, value or attention
    output weights, only that output's bias, which is all the masked layer's attention adds; the heads count as
    none, and the density counts the removed weights as pruned."""
    from fineprune.export.compact import summary
    from fineprune.pruning.stats import weight_density

    model = with_biases(tiny(arch))
    zero_groups(model, 0, heads=[2], neurons=[3])
    zero_groups(model, 1, heads=range(HEADS))
    smaller = compact(model)
    assert (logits_of(smaller, batch) - logits_of(model, batch)).abs().max() <= TOLERANCE
    report = summary(model, smaller)
    assert report["heads"] == 3 and [layer["heads"] for layer in report["layers"]] == [3, 0]
    assert weight_density(smaller) == weight_density(model)

    hidden = 32  # removed: layer 1's Q, K, V (weights, biases) and attention-output weights; layer 0's head 2, neuron 3
    removed = 3 * (hidden * hidden + hidden) + hidden * hidden
    removed += 3 * (HEAD_DIM * hidden + HEAD_DIM) + hidden * HEAD_DIM + (hidden + 1) + hidden
    assert sum(p.numel() for p in smaller.parameters()) == sum(p.numel() for p in model.parameters()) - removed
    stock, block = layouts.encoder_layers(model)[1], layouts.encoder_layers(smaller)[1]
    paths = layouts.block_linears(stock)
    assert [name for name, m in block.named_modules() if isinstance(m, torch.nn.Linear)] == [
        paths.ffn_in,
        paths.ffn_out,
    ]
    output = paths.attention_output
    assert torch.equal(block.get_submodule(output).bias, stock.get_submodule(output).bias)


def test_mpnet_layers_keep_their_own_heads_of_the_shared_position_bias(batch):
    """MPNet adds one relative-position bias, per head index, to every layer: each layer keeps its heads' slices."""
    model = tiny("mpnet")
    with torch.no_grad():  # a bias large enough to matter, different per head
        bias = model.mpnet.encoder.relative_attention_bias.weight
        bias.copy_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)) * 3)
    zero_groups(model, 0, heads=[0, 2])
    zero_groups(model, 1, heads=[0, 1, 3])
    smaller = compact(model)
    assert [layer["heads"] for layer in smaller.config.fineprune_compact] == [[1, 3], [2]]
    assert (logits_of(smaller, batch) - logits_of(model, batch)).abs().max() <= TOLERANCE


def test_compact_needs_a_baked_model():
    with pytest.raises(UsageError, match="baked"):
        compact(pruned(tiny("bert"), "magnitude"))


# -- the folder, without fineprune -------------------------------------------------------------------------------------
LOAD_WITHOUT_FINEPRUNE = """
import json, sys
sys.modules["fineprune"] = None  # any import of fineprune fails
import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

folders, ids = json.loads(sys.argv[1]), torch.tensor(json.loads(sys.argv[2]))
out = {}
for name, folder in folders.items():
    auto = AutoModelForQuestionAnswering if name.endswith("_qa") else AutoModelForSequenceClassification
    model = auto.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        result = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    keys = ("start_logits", "end_logits") if name.endswith("_qa") else ("logits",)
    out[name] = {"class": type(model).__name__, **{k: getattr(result, k).tolist() for k in keys}}
print(json.dumps(out))
"""


def tiny_qa_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99)
    return lively(BertForQuestionAnswering(config).eval())


def test_folders_load_with_trust_remote_code_without_fineprune(tmp_path, batch):
    """Pruned models of every architecture, a question-answering one, and each architecture with a layer that keeps
    no head."""
    models = {arch: pruned(tiny(arch), "movement") for arch in ARCHS} | {"bert_qa": pruned(tiny_qa_model(), "movement")}
    models = {name: fp.bake(model) for name, model in models.items()}
    for arch in ARCHS:
        models[f"{arch}_headless"] = with_biases(tiny(arch))
        zero_groups(models[f"{arch}_headless"], 1, heads=range(HEADS))
    expected, folders = {}, {}
    for name, model in models.items():
        with torch.no_grad():
            result = model(**batch)
        expected[name] = {k: v for k, v in result.items() if k.endswith("logits")}
        folders[name] = str(tmp_path / name)
        save_compact(compact(model), Path(folders[name]))
    env = os.environ | {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-c", LOAD_WITHOUT_FINEPRUNE, json.dumps(folders), json.dumps(batch["input_ids"].tolist())]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    for name, outputs in expected.items():
        assert loaded[name]["class"] == f"Compact{type(models[name]).__name__}"
        for key, value in outputs.items():
            assert (torch.tensor(loaded[name][key]) - value).abs().max() <= TOLERANCE, (name, key)


def test_modeling_file_imports_only_torch_and_transformers(tmp_path):
    save_compact(compact(fp.bake(pruned(tiny("bert"), "magnitude"))), tmp_path)
    tree = ast.parse((tmp_path / MODELING_FILE).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - {"__future__", "inspect", "typing"} == {"torch", "transformers"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoModel": "modeling_fineprune_compact.CompactBertModel",
        "AutoModelForSequenceClassification": "modeling_fineprune_compact.CompactBertForSequenceClassification",
    }


def test_without_trust_remote_code_the_folder_is_refused_not_misread(tmp_path):
    save_compact(compact(fp.bake(pruned(tiny("bert"), "magnitude"))), tmp_path)
    with pytest.raises(RuntimeError, match="mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


# -- the command line --------------------------------------------------------------------------------------------------


def test_cli_export_compact_evaluates_like_the_run(tmp_path):
    from fineprune.config import load_config
    from fineprune.run import train

    rows = mnli_rows()
    data = write_mnli_tsv(tmp_path / "mnli.tsv", rows)
    dense = write_tiny_bert(tmp_path / "dense", vocabulary(rows))
    config = base_config(dense, data, tmp_path / "run")
    config["pruning"] |= {"structure": "heads_neurons", "final_density": 0.4}
    config["training"]["save_strategy"] = "no"
    (tmp_path / "structured.yaml").write_text(yaml.safe_dump(config))
    with one_thread():
        summary = train(load_config(tmp_path / "structured.yaml"))
        out = tmp_path / "compact"
        report = invoke(["export", tmp_path / "run", "--compact", "--out", out])
        from_export = invoke(["eval", out])
    assert report["compact"]["parameters"] < report["compact"]["parameters_before"]
    assert report["compact"]["heads"] < report["compact"]["heads_before"]
    assert from_export["accuracy"] == summary["metrics"]["accuracy"]
    assert from_export["density"] == pytest.approx(summary["sparsity"]["density"], abs=1e-9)
    card = (out / "README.md").read_text()
    assert f"**Parameters: {report['compact']['parameters']:,}" in card and "fineprune bench" in card
    assert f"**{report['compact']['speedup_batch1']:.2f}x faster**" in card
    message = invoke(["export", tmp_path / "run", "--compact", "--keep-scores", "--out", tmp_path / "x"], exit_code=2)
    assert "drop --keep-scores" in message


def test_torch_speedup_is_the_ratio_of_median_cpu_times():
    """A model with 8 times the layers and 64 times the FFN runs several times slower; a model against itself is
    about as fast (noise of a shared machine allowed)."""
    from transformers import BertConfig, BertForSequenceClassification

    from fineprune.timing import torch_speedup

    torch.manual_seed(0)
    small = BertForSequenceClassification(
        BertConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1, intermediate_size=64)
    )
    big = BertForSequenceClassification(
        BertConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=8, intermediate_size=4096)
    )
    threads = torch.get_num_threads()
    assert torch_speedup(big, small, seq_len=32, repeats=5) > 3
    assert 0.5 < torch_speedup(small, small, seq_len=32, repeats=5) < 2
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("task", "auto_class", "seq_len"),
    [
        ({"name": "squad", "max_seq_length": 384}, "AutoModelForQuestionAnswering", 384),
        ({"name": "mnli"}, "AutoModelForSequenceClassification", 128),
    ],
)
def test_compact_model_card_names_the_tasks_auto_class_and_window(task, auto_class, seq_len):
    """A compact QA export is loaded with AutoModelForQuestionAnswering and timed at its own window, not a
    classifier's class and 128 tokens."""
    from fineprune.config import RunConfig
    from fineprune.export.card import model_card

    config = RunConfig.model_validate(
        {
            "model": {"name_or_path": "encoder"},
            "task": task,
            "pruning": {"method": "movement", "structure": "heads_neurons", "final_density": 0.25},
            "training": {"output_dir": "run"},
        }
    )
    report = {"remaining": 1, "total": 4, "density": 0.25, "layers": {}, "matrices": {}}
    removal = {"parameters": 10, "parameters_before": 20, "heads": 2, "heads_before": 4}
    removal |= {"ffn_neurons": 3, "ffn_neurons_before": 6, "layers": []}
    card = model_card(config, report, {}, removal)
    assert f"`{auto_class}.from_pretrained(DIR, trust_remote_code=True)`" in card
    assert f"--seq-len {seq_len}`" in card
