"""Compressed export (bitmask + int8): the bit packing and the int8 rows against independent numpy computations,
compress -> decompress on all four architectures (zero pattern exact, logits close to the baked model's), the stock
folder that `fineprune decompress` writes, one-line errors for damaged files, and `export --compress` -> `eval`."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ARCHS, invoke, tiny_model
from safetensors import safe_open
from safetensors.numpy import save_file
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
from transformers import AutoModelForSequenceClassification, BertConfig, BertForMaskedLM

import fineprune as fp
from fineprune.export.compressed import (
    WEIGHTS_FILE,
    checksum,
    decode_sparse,
    encode_sparse,
    export_compressed,
    pack_bits,
    quantize_rows,
    unpack_bits,
)


def pruned_and_baked(arch: str, density: float = 0.1) -> tuple[torch.nn.Module, list[str]]:
    """A tiny model magnitude-pruned to ``density`` and baked, and the state-dict names of its pruned weights."""
    model = tiny_model(arch)
    fp.prepare(model, fp.PruningConfig(method="magnitude", final_density=density))
    pruner = fp.get_pruner(model)
    pruner.set_step(10, 10)
    names = [f"{name}.weight" for name in pruner.names]
    return fp.bake(model), names


# -- bits --------------------------------------------------------------------------------------------------------------
def bits_by_hand(mask: np.ndarray) -> list[int]:
    """Byte j holds positions 8j .. 8j+7, position 8j+k in bit k (value 2**k)."""
    flat = [bool(b) for b in mask.ravel()]
    return [
        sum(1 << k for k in range(8) if 8 * j + k < len(flat) and flat[8 * j + k]) for j in range(-(-len(flat) // 8))
    ]


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 5), (8, 8), (13, 17), (64, 3)])
@pytest.mark.parametrize("pattern", ["random", "all kept", "none kept"])
def test_bits_round_trip_and_layout(shape, pattern):
    rng = np.random.default_rng(sum(shape))
    mask = {"random": rng.random(shape) < 0.3, "all kept": np.ones(shape, bool), "none kept": np.zeros(shape, bool)}[
        pattern
    ]
    packed = pack_bits(mask)
    assert packed.dtype == np.uint8
    assert packed.tolist() == bits_by_hand(mask)
    assert np.array_equal(unpack_bits(packed, mask.size).reshape(shape), mask)


def test_unpack_refuses_a_wrong_length():
    with pytest.raises(ValueError, match="takes 2 bytes"):
        unpack_bits(np.zeros(3, np.uint8), 9)


# -- int8 rows ---------------------------------------------------------------------------------------------------------
def test_int8_rows_within_half_a_step():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((7, 301)).astype(np.float32) * np.array([[1e-3], [0.05], [1], [30], [1], [1], [1]])
    matrix[4] = 0.0  # a row of zeros
    matrix[5, 17] = -250.0  # an outlier sets its row's step
    matrix[6] = np.array([0.5, -0.5] * 150 + [127.0], np.float32)  # exact ties at half a step of 1.0
    quantized, scales = quantize_rows(matrix)

    m64 = matrix.astype(np.float64)
    step = np.abs(m64).max(axis=1) / 127  # independent, in float64
    assert np.allclose(scales, step, rtol=1e-6, atol=0)
    assert quantized.dtype == np.int8 and np.abs(quantized.astype(int)).max() <= 127
    error = np.abs(quantized.astype(np.float64) * scales.astype(np.float64)[:, None] - m64)
    assert (error <= step[:, None] / 2 * (1 + 1e-5)).all()
    assert scales[4] == 0 and not quantized[4].any()
    assert quantized[5, 17] == -127 and quantized[6, -1] == 127


# -- sparse matrices ---------------------------------------------------------------------------------------------------
def test_sparse_matrix_round_trip():
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((9, 23)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.8] = 0.0
    weight[2] = 0.0  # a row with nothing kept
    weight[3, 0], weight[3, 1] = 2.54, 0.001  # 0.001 is under half a step (0.01): it must stay nonzero
    weight[3, 2] = -0.002
    parts = encode_sparse(weight)
    kept = weight != 0
    assert parts["values"].size == kept.sum() and parts["scales"].size == 9
    decoded = decode_sparse(parts, weight.shape)
    assert np.array_equal(decoded != 0, kept)

    step = np.abs(weight.astype(np.float64)).max(axis=1) / 127
    error = np.abs(decoded.astype(np.float64) - weight)
    tiny = kept & (np.abs(weight) < step[:, None] / 2)
    assert tiny.sum() == 2  # exactly the two planted ones
    assert (error[~tiny] <= step.repeat(23).reshape(9, 23)[~tiny] / 2 * (1 + 1e-5)).all()
    assert decoded[3, 1] == pytest.approx(0.02) and decoded[3, 2] == pytest.approx(-0.02)  # one step, same sign


# -- whole models ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_compress_decompress_keeps_zeros_and_logits(arch, tmp_path, batch):
    baked, pruned = pruned_and_baked(arch)
    with torch.no_grad():
        expected = baked(**batch).logits
    report = export_compressed(baked, tmp_path, pruned)
    loaded = fp.load_compressed(tmp_path)
    state, original = loaded.state_dict(), baked.state_dict()
    for name in pruned:
        assert torch.equal(state[name] == 0, original[name] == 0), name
    assert report["kept_weights"] == sum(int(original[n].count_nonzero()) for n in pruned)
    for name, tensor in original.items():
        step = tensor.abs().reshape(tensor.shape[0], -1).amax(dim=1) / 127 if tensor.dim() > 1 else 0
        error = (state[name] - tensor).abs().reshape(tensor.shape[0], -1) if tensor.dim() > 1 else None
        if error is None:
            assert torch.equal(state[name], tensor), name  # vectors are stored as they are
        else:
            assert (error <= step[:, None] / 2 * (1 + 1e-5)).all(), name
    with torch.no_grad():
        got = loaded(**batch).logits
    # Every weight within half an int8 step (~0.4% of its row's largest): the logits move by a small fraction of
    # their spread; a wrong row, shift or scale moves them by about the spread.
    assert (got - expected).abs().max() <= 0.1 * expected.std()


@pytest.mark.parametrize("other_dtype", ["int8", "fp16"])
@pytest.mark.parametrize("zstd", [True, False])
def test_options_change_the_storage_not_the_zeros(tmp_path, other_dtype, zstd):
    baked, pruned = pruned_and_baked("bert")
    report = export_compressed(baked, tmp_path, pruned, other_dtype=other_dtype, zstd=zstd)
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="np") as reader:
        stored = {name: reader.get_slice(name).get_dtype() for name in reader.keys()}  # noqa: SIM118
        manifest = json.loads(reader.metadata()["manifest"])
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert manifest["tensors"][embeddings]["encoding"] == ("int8-rows" if other_dtype == "int8" else "fp16")
    assert bool(manifest["zstd"]) == zstd
    if not zstd:  # raw parts: their dtypes are the format's
        assert stored[f"{pruned[0]}:bitmask"] == "U8" and stored[f"{pruned[0]}:values"] == "I8"
        assert stored[f"{pruned[0]}:scales"] == "F32"
        assert stored[f"{embeddings}:{'values' if other_dtype == 'int8' else 'data'}"] == (
            "I8" if other_dtype == "int8" else "F16"
        )
    loaded = fp.load_compressed(tmp_path).state_dict()
    for name in pruned:
        assert torch.equal(loaded[name] == 0, baked.state_dict()[name] == 0)
    if other_dtype == "fp16":
        original = baked.state_dict()[embeddings]
        assert torch.equal(loaded[embeddings], original.half().float())
    assert report["compressed_bytes"] == (tmp_path / WEIGHTS_FILE).stat().st_size


def test_sizes_at_ten_percent(tmp_path):
    """The pruned weights take their bitmask (n / 8 bytes), their kept values (1 byte each) and one fp32 scale per
    row, no more; zstd only makes that smaller."""
    baked, pruned = pruned_and_baked("bert")
    state = baked.state_dict()
    n = sum(state[name].numel() for name in pruned)
    kept = sum(int(state[name].count_nonzero()) for name in pruned)
    rows = sum(state[name].shape[0] for name in pruned)
    raw = export_compressed(baked, tmp_path / "raw", pruned, zstd=False)
    assert raw["pruned_linear_bytes"] == sum(-(-state[name].numel() // 8) for name in pruned) + kept + 4 * rows
    assert raw["pruned_weights"] == n and raw["pruned_linear_dense_fp32_bytes"] == 4 * n
    packed = export_compressed(baked, tmp_path / "zstd", pruned)
    assert packed["pruned_linear_bytes"] <= raw["pruned_linear_bytes"]


def test_tied_weights_are_stored_once(tmp_path):
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=99)
    torch.manual_seed(0)
    model = BertForMaskedLM(config).eval()
    report = export_compressed(model, tmp_path, [], zstd=False)
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="np") as reader:
        names = set(reader.keys())
    assert not any(name.startswith("cls.predictions.decoder.weight:") for name in names)
    loaded = fp.load_compressed(tmp_path)
    assert loaded.cls.predictions.decoder.weight.data_ptr() == loaded.bert.embeddings.word_embeddings.weight.data_ptr()
    embeddings = model.bert.embeddings.word_embeddings.weight.detach()
    assert report["dense_fp32_bytes"] == sum(4 * t.numel() for t in model.parameters())  # counted once
    assert torch.allclose(
        loaded.bert.embeddings.word_embeddings.weight, embeddings, atol=float(embeddings.abs().max()) / 254
    )


def test_decompress_writes_a_stock_folder(tmp_path, batch):
    baked, pruned = pruned_and_baked("roberta")
    export_compressed(baked, tmp_path / "compressed", pruned)
    (tmp_path / "compressed" / "README.md").write_text("card\n")
    invoke(["decompress", tmp_path / "compressed", "--out", tmp_path / "stock"])
    stock = AutoModelForSequenceClassification.from_pretrained(tmp_path / "stock").eval()  # transformers alone
    in_memory = fp.load_compressed(tmp_path / "compressed")
    assert (tmp_path / "stock" / "README.md").read_text() == "card\n"
    assert not (tmp_path / "stock" / WEIGHTS_FILE).exists()
    for name, tensor in in_memory.state_dict().items():
        assert torch.equal(stock.state_dict()[name], tensor), name
    with torch.no_grad():
        assert torch.equal(stock(**batch).logits, in_memory(**batch).logits)


# -- bad input ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def compressed(tmp_path) -> Path:
    baked, pruned = pruned_and_baked("bert")
    export_compressed(baked, tmp_path / "compressed", pruned)
    return tmp_path / "compressed"


def rewrite_metadata(file: Path, rehash: bool = False, drop: str | None = None, **changes: str) -> None:
    """Change (or ``drop``) entries of the file's metadata; with ``rehash``, its sha256 made to fit the change."""
    with safe_open(str(file), framework="np") as reader:
        parts = {name: reader.get_tensor(name) for name in reader.keys()}  # noqa: SIM118
        metadata = reader.metadata() | changes
    metadata.pop(drop, None)
    if rehash:
        metadata["sha256"] = checksum(metadata["manifest"], parts)
    save_file(parts, str(file), metadata=metadata)


def edit_manifest(file: Path, edit, rehash: bool) -> None:
    """Apply ``edit`` to the manifest's tensors (name -> entry) of the file."""
    with safe_open(str(file), framework="np") as reader:
        manifest = json.loads(reader.metadata()["manifest"])
    edit(manifest["tensors"])
    rewrite_metadata(file, rehash=rehash, manifest=json.dumps(manifest, separators=(",", ":")))


QUERY = "bert.encoder.layer.0.attention.self.query.weight"  # stored as bitmask + int8
MANIFEST_EDITS = {
    "shape": lambda tensors: tensors[QUERY].update(shape=[32, 31]),
    "encoding": lambda tensors: tensors[QUERY].update(encoding="copy"),
    "dropped": lambda tensors: tensors.pop(QUERY),
}


def damage(folder: Path, how: str) -> None:
    file = folder / WEIGHTS_FILE
    data = bytearray(file.read_bytes())
    if how == "truncated":
        file.write_bytes(data[: len(data) - 1000])
    elif how == "altered":
        header = 8 + struct.unpack("<Q", data[:8])[0]
        data[header + (len(data) - header) // 2] ^= 0x01  # one bit in the middle of the tensors
        file.write_bytes(data)
    elif how.startswith("version"):
        version = how.removeprefix("version ")
        rewrite_metadata(file, drop="format_version") if version == "none" else rewrite_metadata(
            file, format_version=version
        )
    elif how == "sha256":
        rewrite_metadata(file, sha256="0" * 64)
    elif how.startswith("manifest"):  # "manifest EDIT" keeps the sha256 of the original; "... rehashed" fits it
        edit_manifest(file, MANIFEST_EDITS[how.split()[1]], rehash=how.endswith("rehashed"))
    elif how == "format":
        rewrite_metadata(file, format="something.else")
    elif how == "stock":
        file.unlink()
    elif how == "config":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 3}))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("stock", "not a compressed export (no model.compressed.safetensors"),
        ("truncated", "not a readable safetensors file"),
        ("altered", "checksum mismatch"),
        ("version 2", "format version 2, written by a newer fineprune; this one reads version 1: upgrade"),
        (
            "version 0",
            "format version '0' is not one fineprune writes (this one reads version 1): the file was altered",
        ),
        ("version 1.5", "format version '1.5' is not one fineprune writes"),
        ("version none", "no format version (this one reads version 1): the file was altered"),
        ("sha256", "checksum mismatch"),
        ("manifest shape", "checksum mismatch"),
        ("manifest shape rehashed", f"cannot decode: {QUERY}: a bitmask of 992 positions takes 124 bytes, not 128"),
        ("manifest encoding rehashed", f"cannot decode: {QUERY}: 'data' missing"),
        (
            "manifest dropped rehashed",
            f"the weights do not fit BertForSequenceClassification: {{'missing_keys': ['{QUERY}']",
        ),
        ("format", "not a fineprune compressed file"),
        ("config", "the weights do not fit BertForSequenceClassification"),
    ],
)
def test_bad_compressed_folder_is_one_line_and_exit_2(compressed, tmp_path, how, message):
    damage(compressed, how)
    error = invoke(["decompress", compressed, "--out", tmp_path / "stock"], exit_code=2)
    lines = error.strip().splitlines()  # transformers' progress bar may come first, when the config is read
    assert message in lines[-1] and sum(line.startswith("error:") for line in lines) == 1
    assert not (tmp_path / "stock").exists()


def test_decompress_never_overwrites_without_overwrite(compressed, tmp_path):
    out = tmp_path / "stock"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    error = invoke(["decompress", compressed, "--out", out], exit_code=2)
    assert "is not empty: pass --overwrite" in error and (out / "keep.txt").read_text() == "mine"
    error = invoke(["decompress", compressed, "--out", compressed, "--overwrite"], exit_code=2)
    assert "the compressed folder itself" in error and (compressed / WEIGHTS_FILE).is_file()
    invoke(["decompress", compressed, "--out", out, "--overwrite"])
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


# -- the command line: export --compress -> eval -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnli_run(tmp_path_factory) -> dict[str, Path]:
    """A tiny lively BERT (tiny_assets.write_tiny_bert) fine-pruned to 50% with movement on a tiny MNLI TSV."""
    from fineprune.config import load_config
    from fineprune.run import train

    root = tmp_path_factory.mktemp("compressed_mnli")
    rows = mnli_rows()
    model = write_tiny_bert(root / "dense", vocabulary(rows), lively=True)
    config = base_config(model, write_mnli_tsv(root / "mnli.tsv", rows), root / "run")
    config["training"]["save_strategy"] = "no"
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    with one_thread():
        train(load_config(root / "config.yaml"))
    return {"root": root, "run": root / "run"}


def test_export_compress_then_eval(mnli_run, tmp_path):
    run = mnli_run["run"]
    summary = json.loads((run / "summary.json").read_text())
    baked = invoke(["export", run, "--out", tmp_path / "baked"])
    report = invoke(["export", run, "--compress", "--out", tmp_path / "compressed"])
    folder = tmp_path / "compressed"
    assert report["density"] == baked["density"] == summary["sparsity"]["density"]
    assert report["compressed_bytes"] < baked["safetensors_bytes"] / 3
    assert sorted(p.name for p in folder.glob("*.safetensors")) == [WEIGHTS_FILE]
    card = (folder / "README.md").read_text()
    assert "## Compressed storage" in card and f"{report['compressed_bytes']:,}" in card
    assert (
        "library_name: fineprune" in card
        and "library_name: fineprune" not in (tmp_path / "baked" / "README.md").read_text()
    )

    from_compressed = invoke(["eval", folder])
    invoke(["decompress", folder, "--out", tmp_path / "stock"])
    from_stock = invoke(["eval", tmp_path / "stock"])
    from_baked = invoke(["eval", tmp_path / "baked"])
    assert from_compressed["accuracy"] == from_stock["accuracy"]
    assert from_compressed["density"] == from_stock["density"] == pytest.approx(baked["density"], abs=1e-12)
    # the compressed model (int8 values) gives the baked model's predictions over the task's features: its accuracy
    task, tokenizer, features = mnli_eval_features(folder)
    expected = row_logits(
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "baked").eval(),
        features,
        tokenizer.model_input_names,
    )
    assert_same_predictions(row_logits(fp.load_compressed(folder), features, tokenizer.model_input_names), expected)
    accuracy = float((expected.argmax(axis=1) == np.array(features["labels"])).mean())
    assert from_compressed["accuracy"] == from_baked["accuracy"] == pytest.approx(accuracy)
    assert "fineprune decompress" not in (tmp_path / "stock" / "README.md").read_text()
    assert "library_name: transformers" in (tmp_path / "stock" / "README.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compress", "--keep-scores"], "--compress needs the masks baked"),
        (["--other-dtype", "fp16"], "--other-dtype: only with --compress"),
        (["--compress", "--other-dtype", "int4"], "int4"),
    ],
)
def test_export_compress_bad_options(mnli_run, tmp_path, args, message):
    error = invoke(["export", mnli_run["run"], "--out", tmp_path / "out", *args], exit_code=2)
    assert message in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["run", "root"])
def test_export_never_replaces_the_run_it_exports(mnli_run, where):
    """--overwrite replaces an earlier export, never the run itself or a folder holding it."""
    error = invoke(["export", mnli_run["run"], "--out", mnli_run[where], "--overwrite"], exit_code=2)
    assert "holds the run" in error and "itself" in error
    assert (mnli_run["run"] / "summary.json").is_file() and (mnli_run["root"] / "config.yaml").is_file()
