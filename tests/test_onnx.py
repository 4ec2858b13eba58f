"""ONNX export and evaluation: the fp32 graph gives torch's outputs (any batch, any length, padding, segments), the
int8 graph quantizes every linear layer per channel, and `fineprune export --onnx` / `eval --onnx` work on stock
folders, on a fine-pruned run's export and on SQuAD, with one-line errors for bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml
from conftest import ARCHS, TINY, invoke, lively, tiny_model, with_biases
from onnx import numpy_helper
from tiny_assets import (
    assert_same_predictions,
    base_config,
    mnli_eval_features,
    mnli_rows,
    one_thread,
    row_logits,
    vocabulary,
    write_mnli_tsv,
    write_tiny_bert,
)
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForQuestionAnswering,
    BertTokenizerFast,
)

from fineprune.export.onnx import export_onnx
from fineprune.inputs import input_names, random_inputs


def run_graph(path: Path, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """ONNX Runtime straight, not fineprune's session helper."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})


def padded_batch(batch: int, length: int, segments: bool, seed: int = 3) -> dict[str, torch.Tensor]:
    """Shapes other than the traced 2 x 16; rows padded to different lengths; segment ids 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, length - 2 * row :] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if segments:
        inputs["token_type_ids"] = (torch.arange(length) >= length // 2).long().expand(batch, length).contiguous()
    return inputs


# -- the graphs ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=ARCHS)
def exported(request, tmp_path_factory) -> tuple[str, torch.nn.Module, Path, dict]:
    """(arch, model, folder, report): each tiny model exported once for the tests of its graphs; its weights scaled
    so that the logits are about 1 and an error in a head or a mask shows above the 1e-4 tolerance."""
    model, folder = lively(tiny_model(request.param)), tmp_path_factory.mktemp(request.param)
    return request.param, model, folder, export_onnx(model, folder)


def test_fp32_graph_gives_torch_logits(exported):
    arch, model, tmp_path, report = exported
    graph = onnx.load(tmp_path / "onnx" / "model.onnx")
    names = [i.name for i in graph.graph.input]
    segments = arch in ("bert", "roberta")  # type_vocab_size 2 (roberta-base has 1); DistilBERT and MPNet none
    assert names == ["input_ids", "attention_mask", *(["token_type_ids"] if segments else [])]
    assert [o.name for o in graph.graph.output] == ["logits"]
    for value in graph.graph.input:  # batch and sequence are symbols, not numbers
        assert all(d.dim_param and not d.dim_value for d in value.type.tensor_type.shape.dim)

    for batch, length in ((1, 5), (4, 23)):
        inputs = padded_batch(batch, length, segments)
        with torch.no_grad():
            expected = model(**inputs).logits.numpy()
        (got,) = run_graph(tmp_path / "onnx" / "model.onnx", inputs)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
    assert report["onnx_max_abs_error"] <= 1e-4
    assert model.config._attn_implementation == ("eager" if arch == "mpnet" else "sdpa")  # given back as it came


def test_int8_graph_quantizes_every_linear_per_channel(exported):
    arch, model, tmp_path, _ = exported
    graph = onnx.load(tmp_path / "onnx" / "model_quantized.onnx")
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    products = [node for node in graph.graph.node if node.op_type == "MatMulInteger"]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(products) == len(linears)
    for node in products:  # inputs: activations, weight, activation zero point, weight zero points
        weight, zero_points = initializers[node.input[1]], initializers[node.input[3]]
        assert weight.dtype == np.int8
        assert zero_points.shape == (weight.shape[1],)  # one per output channel

    inputs = padded_batch(4, 23, segments=arch in ("bert", "roberta"))
    (fp32,) = run_graph(tmp_path / "onnx" / "model.onnx", inputs)
    (int8,) = run_graph(tmp_path / "onnx" / "model_quantized.onnx", inputs)
    assert 0 < np.abs(int8 - fp32).max() <= 0.1 * np.abs(fp32).max()


def test_sessions_leave_layer_norm_unfused(exported, tmp_path, monkeypatch):
    """ONNX Runtime fuses each residual Add + LayerNorm into SkipLayerNormalization, slower here (SLOW_FUSIONS)."""
    from fineprune import onnx_inference

    folder = exported[2]

    def optimized_ops(open_graph) -> set[str]:
        saved = tmp_path / f"optimized_{len(list(tmp_path.iterdir()))}.onnx"
        with monkeypatch.context() as patch:

            class Saving(onnxruntime.SessionOptions):
                def __init__(self):
                    super().__init__()
                    self.optimized_model_filepath = str(saved)

            patch.setattr(onnx_inference.onnxruntime, "SessionOptions", Saving)
            open_graph(folder / "onnx" / "model.onnx")
        return {node.op_type for node in onnx.load(saved).graph.node}

    default = optimized_ops(
        lambda graph: onnxruntime.InferenceSession(
            str(graph), onnxruntime.SessionOptions(), providers=["CPUExecutionProvider"]
        )
    )
    ours = optimized_ops(onnx_inference.open_session)
    assert "SkipLayerNormalization" in default  # what ONNX Runtime does unless told
    assert "SkipLayerNormalization" not in ours and "LayerNormalization" in ours


def test_compact_folder_gets_graphs_of_the_model_it_came_from(tmp_path):
    """A compact export (loaded with trust_remote_code) gives graphs whose logits are the stock model's with zeros."""
    from fineprune.export.compact import compact, save_compact

    model = lively(tiny_model("bert"))
    layers = model.bert.encoder.layer
    with torch.no_grad():  # head 1 of layer 0 and FFN neurons 0-39 of layer 1 left empty
        for matrix in (layers[0].attention.self.query, layers[0].attention.self.key, layers[0].attention.self.value):
            matrix.weight[8:16] = 0
        layers[0].attention.output.dense.weight[:, 8:16] = 0
        layers[1].intermediate.dense.weight[:40] = 0
        layers[1].output.dense.weight[:, :40] = 0
    save_compact(compact(model), tmp_path)
    report = invoke(["export", tmp_path, "--onnx"])
    assert report["onnx_max_abs_error"] <= 1e-4
    graph = onnx.load(tmp_path / "onnx" / "model.onnx")
    shapes = [numpy_helper.to_array(i).shape for i in graph.graph.initializer]
    # 24 = 3 heads of 8 (layer 0's query, key, value, attention output) = 64 - 40 neurons (layer 1's FFN in, out)
    assert sum(len(shape) == 2 and 24 in shape for shape in shapes) == 6
    inputs = padded_batch(4, 23, segments=True)
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    (got,) = run_graph(tmp_path / "onnx" / "model.onnx", inputs)
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_compact_folder_with_a_layer_without_heads_gets_its_graphs(tmp_path, arch):
    """A compact layer that keeps no head (its attention replaced, see export.compact_modeling) traces into graphs
    that give the stock model's logits, with one quantized product per Linear layer left."""
    from fineprune import layouts
    from fineprune.export.compact import compact, save_compact

    model = with_biases(lively(tiny_model(arch)))
    block = layouts.encoder_layers(model)[1]
    paths = layouts.block_linears(block)
    with torch.no_grad():  # every head of layer 1 empty; its biases are not
        for path in (paths.query, paths.key, paths.value, paths.attention_output):
            block.get_submodule(path).weight.zero_()
    smaller = compact(model)
    save_compact(smaller, tmp_path)
    assert invoke(["export", tmp_path, "--onnx"])["onnx_max_abs_error"] <= 1e-4
    inputs = padded_batch(4, 23, segments=arch in ("bert", "roberta"))
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    (got,) = run_graph(tmp_path / "onnx" / "model.onnx", inputs)
    assert np.abs(got - expected).max() <= 1e-4
    int8 = onnx.load(tmp_path / "onnx" / "model_quantized.onnx")
    linears = sum(isinstance(m, torch.nn.Linear) for m in smaller.modules())
    assert linears == 6 + 2 + 2  # layer 0's six, layer 1's FFN, the head's two (pooler or dense, then the output)
    assert sum(node.op_type == "MatMulInteger" for node in int8.graph.node) == linears


def large_logits_model() -> torch.nn.Module:
    """The lively tiny BERT with its classifier scaled so that its largest logit is 200 on the export's check
    inputs: float32 rounding alone then differs by about 2.6e-4 between the graph and torch."""
    model = lively(tiny_model("bert"))
    check = random_inputs(input_names(model), TINY["vocab_size"], 3, 11, seed=1, pad_last=4)
    with torch.no_grad():
        scale = 200 / model(**check).logits.abs().max()
        model.classifier.weight.mul_(scale)
        model.classifier.bias.mul_(scale)
    return model


def test_large_logits_pass_within_a_tolerance_relative_to_their_scale(tmp_path):
    model = large_logits_model()
    report = export_onnx(model, tmp_path, quantize=False)
    assert 1e-4 < report["onnx_max_abs_error"] <= 1e-4 + 1e-5 * 200  # past an absolute 1e-4, within 1e-4 + 1e-5 x 200
    inputs = padded_batch(4, 23, segments=True)
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    (got,) = run_graph(tmp_path / "onnx" / "model.onnx", inputs)
    assert np.abs(got - expected).max() <= 1e-4 + 1e-5 * np.abs(expected).max()


class NudgedSession:
    """An ONNX Runtime session whose first output's first value is moved by ``factor`` times the tolerance of that
    output (1e-4 + 1e-5 x its largest |value|)."""

    def __init__(self, session: onnxruntime.InferenceSession, factor: float):
        self.session, self.factor = session, factor

    def __getattr__(self, name: str):
        return getattr(self.session, name)

    def run(self, names, feeds) -> list[np.ndarray]:
        outputs = self.session.run(names, feeds)
        outputs[0].flat[0] += self.factor * (1e-4 + 1e-5 * np.abs(outputs[0]).max())
        return outputs


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_graph_beyond_the_tolerance_is_refused_in_one_line(tmp_path, monkeypatch, factor):
    """A graph off by 0.9 of the tolerance is written; off by 1.1 of it, the export is refused and the graph
    deleted."""
    from fineprune import onnx_inference

    large_logits_model().save_pretrained(tmp_path)
    opened = onnx_inference.open_session
    monkeypatch.setattr(onnx_inference, "open_session", lambda graph: NudgedSession(opened(graph), factor))
    if factor < 1:
        report = invoke(["export", tmp_path, "--onnx"])
        assert 1e-4 < report["onnx_max_abs_error"] < 1e-4 + 1e-5 * 200
        return
    error = invoke(["export", tmp_path, "--onnx"], exit_code=2)
    lines = error.strip().splitlines()  # transformers' progress bar comes first, when the folder is loaded
    assert lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1
    assert "output logits of the graph differs from BertForSequenceClassification in torch by" in lines[-1]
    assert "1e-05 x max|logits| 200" in lines[-1]
    assert not (tmp_path / "onnx" / "model.onnx").exists()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_folders_give_an_fp32_graph_of_the_fp32_model(tmp_path, dtype):
    """A folder saved in bf16 or fp16 gets an fp32 graph (inputs int64; outputs, weights and casts fp32 only) that
    gives the logits of its weights in fp32; the model exported is left in its dtype."""
    model = lively(tiny_model("bert")).to(dtype)
    model.save_pretrained(tmp_path)
    assert invoke(["export", tmp_path, "--onnx"])["onnx_max_abs_error"] <= 1e-4
    export_onnx(model, tmp_path / "again", quantize=False)
    assert next(model.parameters()).dtype == dtype

    graph = onnx.load(tmp_path / "onnx" / "model.onnx")
    int64, fp32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    assert {i.type.tensor_type.elem_type for i in graph.graph.input} == {int64}
    assert {o.type.tensor_type.elem_type for o in graph.graph.output} == {fp32}
    floating = [
        i for i in graph.graph.initializer if i.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.BOOL)
    ]
    assert floating and {i.data_type for i in floating} == {fp32}
    casts = {a.i for node in graph.graph.node if node.op_type == "Cast" for a in node.attribute if a.name == "to"}
    assert not casts & {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}

    in_fp32 = AutoModelForSequenceClassification.from_pretrained(tmp_path, dtype=torch.float32).eval()
    inputs = padded_batch(4, 23, segments=True)
    with torch.no_grad():
        expected = in_fp32(**inputs).logits.numpy()
    (got,) = run_graph(tmp_path / "onnx" / "model.onnx", inputs)
    assert got.dtype == np.float32 and np.abs(got - expected).max() <= 1e-4


# -- the command line: classification ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnli(tmp_path_factory):
    """A tiny lively BERT folder (tiny_assets.write_tiny_bert) with a config (MNLI TSV), and a run fine-pruned from it
    to 50% with movement."""
    from fineprune.config import load_config
    from fineprune.run import train

    root = tmp_path_factory.mktemp("onnx_mnli")
    rows = mnli_rows()
    data = write_mnli_tsv(root / "mnli.tsv", rows)
    model = write_tiny_bert(root / "dense", vocabulary(rows), lively=True)
    config = base_config(model, data, root / "run")
    config["training"]["save_strategy"] = "no"
    (model / "fineprune_config.yaml").write_text(yaml.safe_dump(config))
    with one_thread():
        train(load_config(model / "fineprune_config.yaml"))
    return {"root": root, "dense": model, "run": root / "run"}


def test_export_onnx_of_a_stock_folder_in_place(mnli, tmp_path):
    folder = tmp_path / "dense"
    invoke(["export", mnli["dense"], "--onnx", "--out", folder])  # a copy of the stock model, with its graphs
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert (folder / "onnx" / "model.onnx").is_file()
    (folder / "onnx" / "model.onnx").unlink()
    (folder / "onnx" / "model_quantized.onnx").write_text("mine")
    error = invoke(["export", folder, "--onnx"], exit_code=2)  # in place: earlier graphs are kept
    assert error.count("\n") == 1 and "onnx is not empty" in error and "--overwrite" in error
    assert (folder / "onnx" / "model_quantized.onnx").read_text() == "mine"
    report = invoke(["export", folder, "--onnx", "--overwrite"])
    assert report["out"] == str(folder) and report["onnx_max_abs_error"] <= 1e-4
    assert (folder / "onnx" / "model.onnx").is_file() and (folder / "onnx" / "model_quantized.onnx").stat().st_size > 4


def test_baked_export_with_onnx_evaluates_like_torch(mnli):
    from fineprune.onnx_inference import open_session, predict

    out = mnli["root"] / "export"
    report = invoke(["export", mnli["run"], "--bake-masks", "--onnx", "--out", out])
    assert report["density"] == pytest.approx(0.5, abs=0.01) and report["onnx_max_abs_error"] <= 1e-4

    # over the task's own features, in batches of 4: the fp32 graph's logits are the baked torch model's, row by row;
    # the int8 graph's are close enough to give the same predictions
    task, tokenizer, features = mnli_eval_features(out)
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    expected = row_logits(model, features, tokenizer.model_input_names)
    (fp32,) = predict(open_session(out / "onnx" / "model.onnx"), task.model_inputs(features), tokenizer, 4)
    (int8,) = predict(open_session(out / "onnx" / "model_quantized.onnx"), task.model_inputs(features), tokenizer, 4)
    assert np.abs(fp32 - expected).max() <= 1e-4
    assert_same_predictions(int8, expected)
    accuracy = float((expected.argmax(axis=1) == np.array(features["labels"])).mean())

    from_torch = invoke(["eval", out])
    from_graph = invoke(["eval", out, "--onnx"])
    from_int8 = invoke(["eval", out, "--onnx-quantized"])
    assert from_torch["backend"] == "torch" and from_graph["backend"] == "onnx"
    assert from_int8["backend"] == "onnx-quantized" and from_int8["graph"].endswith("model_quantized.onnx")
    assert from_torch["accuracy"] == from_graph["accuracy"] == from_int8["accuracy"] == pytest.approx(accuracy)
    assert json.loads((out / "eval_results.json").read_text())["backend"] == "torch"  # not overwritten
    assert json.loads((out / "eval_results_onnx.json").read_text()) == from_graph

    # the model card's ONNX section names both graphs, and its snippet opens the int8 graph from the folder
    card = (out / "README.md").read_text()
    section = card[card.index("## ONNX") :]
    assert "`onnx/model.onnx` (fp32)" in section and "`onnx/model_quantized.onnx` (dynamic int8" in section
    snippet = section.split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out)
        exec(snippet, namespace)
    assert [i.name for i in namespace["session"].get_inputs()][:2] == ["input_ids", "attention_mask"]


def test_structured_run_compact_onnx_evaluates_like_the_run(mnli):
    """The deployment path of the README: train heads and neurons, export --compact --onnx, eval each graph."""
    from fineprune.config import load_config
    from fineprune.onnx_inference import open_session, predict
    from fineprune.run import train

    config = yaml.safe_load((mnli["dense"] / "fineprune_config.yaml").read_text())
    config["pruning"] |= {"structure": "heads_neurons", "final_density": 0.4}
    config["training"]["output_dir"] = str(mnli["root"] / "structured")
    (mnli["root"] / "structured.yaml").write_text(yaml.safe_dump(config))
    with one_thread():
        summary = train(load_config(mnli["root"] / "structured.yaml"))
    out = mnli["root"] / "compact"
    report = invoke(["export", mnli["root"] / "structured", "--compact", "--onnx", "--out", out])
    assert report["compact"]["heads"] < report["compact"]["heads_before"]
    assert report["onnx_max_abs_error"] <= 1e-4
    assert invoke(["eval", out, "--onnx"])["accuracy"] == summary["metrics"]["accuracy"]

    # the int8 graph of the compact model gives the compact torch model's predictions, and so the run's accuracy
    task, tokenizer, features = mnli_eval_features(out)
    model = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True).eval()
    (int8,) = predict(open_session(out / "onnx" / "model_quantized.onnx"), task.model_inputs(features), tokenizer, 4)
    assert_same_predictions(int8, row_logits(model, features, tokenizer.model_input_names))
    assert invoke(["eval", out, "--onnx-quantized"])["accuracy"] == summary["metrics"]["accuracy"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "{dense}", "--onnx"], "no ONNX graph here"),
        (["eval", "{dense}", "--onnx", "--onnx-quantized"], "exclude each other"),
        (["eval", "{empty}", "--onnx"], "no ONNX graph here"),
        (["export", "{empty}", "--onnx"], "no trained model here"),
        (["export", "{run}", "--keep-scores", "--onnx", "--out", "{empty}/x"], "drop --keep-scores"),
        (["export", "{run}", "--onnx"], "--out: required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(mnli, tmp_path, args, message):
    paths = {"dense": mnli["dense"], "empty": tmp_path, "run": mnli["run"]}
    error = invoke([a.format(**paths) for a in args], exit_code=2)
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error


# -- the command line: SQuAD -------------------------------------------------------------------------------------------
def squad_records() -> list[dict]:
    """Questions over contexts of different lengths: the first three fit in one short window each (a batch shorter
    than the longest), the others take one or two windows of up to 32 tokens."""
    rng = random.Random(0)
    names, places = ["anna", "boris", "chen", "dora"], ["paris", "lima", "oslo", "kyoto"]
    records = []
    for i, filler_words in enumerate((0, 2, 4, 25, 30, 12, 28, 20)):
        name, place = rng.choice(names), rng.choice(places)
        filler = " ".join(rng.choice(names + places) for _ in range(filler_words))
        context = f"{filler} {name} lives in {place} .".strip()
        records.append(
            {
                "id": f"q{i}",
                "title": f"t{i % 3}",
                "context": context,
                "question": f"where does {name} live ?",
                "answers": {"text": [place], "answer_start": [context.index(f"lives in {place}") + 9]},
            }
        )
    return records


def write_tiny_qa(folder: Path, records: list[dict], lively_weights: bool = False) -> BertTokenizerFast:
    """A random 2-layer BERT question-answering folder with a WordPiece tokenizer over the records' words, and a
    `method: none` config that evaluates it on them (max_seq_length 32, stride 8: long contexts take two windows)."""
    data = folder.parent / f"{folder.name}.json"
    data.write_text(json.dumps(records))
    folder.mkdir()
    words = sorted({w for r in records for w in f"{r['context']} {r['question']}".split()})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = BertForQuestionAnswering(config)
    (lively(model) if lively_weights else model).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    task = {"name": "squad", "train_file": str(data), "validation_file": str(data), "max_seq_length": 32}
    task["doc_stride"] = 8
    run_config = {"model": {"name_or_path": str(folder)}, "task": task, "pruning": {"method": "none"}}
    run_config["training"] = {
        "output_dir": str(folder.parent / "unused"),
        "per_device_eval_batch_size": 3,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
    }
    (folder / "fineprune_config.yaml").write_text(yaml.safe_dump(run_config))
    return tokenizer


def test_eval_onnx_on_squad_gives_the_same_answers(tmp_path):
    records = squad_records()
    folder = tmp_path / "qa"
    tokenizer = write_tiny_qa(folder, records)

    invoke(["export", folder, "--onnx"])
    from_torch = invoke(["eval", folder])
    torch_answers = json.loads((folder / "predictions.json").read_text())
    from_graph = invoke(["eval", folder, "--onnx"])
    assert from_graph["backend"] == "onnx"
    assert {k: from_graph[k] for k in ("exact_match", "f1")} == {k: from_torch[k] for k in ("exact_match", "f1")}
    assert json.loads((folder / "predictions.json").read_text()) == torch_answers  # the torch run's file is kept

    # the same answers, decoded from the graph's padded logits
    from fineprune.config import load_config
    from fineprune.onnx_inference import PAD_LOGIT, open_session, predict
    from fineprune.tasks import load_task
    from fineprune.tasks.qa import postprocess_predictions

    squad = load_task(load_config(folder / "fineprune_config.yaml").task)
    prepared = squad.prepare(tokenizer)
    lengths = [len(ids) for ids in prepared.eval["input_ids"]]
    assert max(lengths[:3]) < max(lengths) and len(prepared.eval) > len(records)  # see squad_records
    start, end = predict(open_session(folder / "onnx" / "model.onnx"), squad.model_inputs(prepared.eval), tokenizer, 3)
    assert start.shape == end.shape == (len(lengths), max(lengths))
    model = BertForQuestionAnswering.from_pretrained(str(folder)).eval()
    for first in range(0, len(lengths), 3):  # batches of 3: padded to their longest row, then to the longest of all
        longest = max(lengths[first : first + 3])
        for row in range(first, min(first + 3, len(lengths))):
            assert (start[row, longest:] == PAD_LOGIT).all() and (start[row, :longest] != PAD_LOGIT).all()
            features = {
                k: torch.tensor([prepared.eval[row][k]]) for k in ("input_ids", "attention_mask", "token_type_ids")
            }
            with torch.no_grad():
                expected = model(**features)
            assert np.abs(start[row, : lengths[row]] - expected.start_logits[0].numpy()).max() <= 1e-4
            assert np.abs(end[row, : lengths[row]] - expected.end_logits[0].numpy()).max() <= 1e-4
    assert postprocess_predictions(prepared.eval_examples, prepared.eval, start, end) == torch_answers


def test_structured_qa_run_compact_onnx_evaluates_like_the_run(tmp_path):
    """configs/squad_structured.yaml's path on a tiny model: heads and neurons per kind, distilled with hidden states,
    then `export --compact --onnx` and `eval --onnx` / `--onnx-quantized` of the export."""
    from fineprune.config import load_config
    from fineprune.run import train

    dense = tmp_path / "dense"
    write_tiny_qa(dense, squad_records(), lively_weights=True)
    config = yaml.safe_load((dense / "fineprune_config.yaml").read_text())
    config["pruning"] = {
        "method": "movement",
        "structure": "heads_neurons",
        "scope": "global",
        "group_budget": "per_kind",
        "scores_update": "platon",
        "final_density": 0.5,
        "warmup_steps": 1,
        "cooldown_steps": 1,
    }
    config["distillation"] = {"teacher": str(dense), "alpha_hidden": 1.0}
    config["training"] |= {
        "output_dir": str(tmp_path / "run"),
        "num_train_epochs": 4,
        "per_device_train_batch_size": 4,
        "save_strategy": "no",
    }
    (tmp_path / "structured.yaml").write_text(yaml.safe_dump(config))
    with one_thread():
        summary = train(load_config(tmp_path / "structured.yaml"))
    out = tmp_path / "compact"
    report = invoke(["export", tmp_path / "run", "--compact", "--onnx", "--out", out])
    assert report["compact"]["heads"] < report["compact"]["heads_before"]
    assert report["compact"]["ffn_neurons"] < report["compact"]["ffn_neurons_before"]
    assert report["onnx_max_abs_error"] <= 1e-4
    metrics = {key: summary["metrics"][key] for key in ("exact_match", "f1")}
    for flag, backend in (("--onnx", "onnx"), ("--onnx-quantized", "onnx-quantized")):
        results = invoke(["eval", out, flag])
        assert results["backend"] == backend
        assert {key: results[key] for key in metrics} == pytest.approx(metrics)
