"""Compressed export of an unstructured pruned model: a bitmask of the kept positions and their values in int8.

An unstructured model at 10% density saved as a stock folder is a dense fp32 file full of zeros, as large as the
dense model. This format stores each pruned linear weight as a packed bitmask (one bit per position, set where the
weight is kept), the kept values in int8 (row-major order) and one fp32 scale per row (symmetric per-channel:
``scale = max|kept row| / 127``); the other tensors (embeddings, pooler, head) in int8 per row or fp16, vectors
(biases, LayerNorm) and integer buffers as they are. By default each stored part is also compressed with zstd where
that makes it smaller: the bitmask of a 10% model is far from random bits (about 0.47 bit of information per
position) and zstd halves it. xz (LZMA) gives the same sizes but decodes about 30 times slower, zlib 1% larger and 5
times slower (see docs/benchmarks.md, "Compressed export").

Everything is one safetensors file, ``model.compressed.safetensors``, beside ``config.json``; its metadata records
the format name and version, a manifest (how each tensor of the state dict is stored) and the sha256 of the
manifest and every stored part, so that a truncated or altered file is refused instead of loaded wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
import zstandard
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from transformers import PreTrainedModel

from fineprune.errors import UsageError
from fineprune.outputs import check_complete, writing

FORMAT_NAME = "fineprune.compressed"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.compressed.safetensors"
OTHER_DTYPES = ("int8", "fp16")
ZSTD_MIN_BYTES = 4096  # a smaller part has little to gain
ZSTD_LEVEL = 19  # 22 gives the same sizes here, more slowly
INT8_MAX = 127
FP16_MAX = float(np.finfo(np.float16).max)

# What the model card says about how the weights are stored, and what decompress() puts in its place.
COMPRESSED_NOTE = (
    "The weights are stored in fineprune's compressed format (bitmask of the kept positions + int8 values): load "
    "them with `fineprune.load_compressed(folder)`, evaluate with `fineprune eval folder`, or write a stock "
    "transformers folder that needs no fineprune with `fineprune decompress folder --out stock_folder`."
)
DECOMPRESSED_NOTE = (
    "Decompressed from fineprune's compressed format: a stock transformers model, zeros where weights were pruned, "
    "the other weights as stored (int8 per row, within half a quantization step, or fp16); it loads with "
    "`AutoModel*.from_pretrained` and needs no fineprune."
)


# -- pieces: bits and int8 rows ----------------------------------------------------------------------------------------
def pack_bits(mask: np.ndarray) -> np.ndarray:
    """The mask, flattened row-major, eight positions per byte; position i is bit ``i % 8`` (least significant
    first) of byte ``i // 8``; the last byte's unused bits are zero."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel(), bitorder="little")


def unpack_bits(packed: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` positions of a :func:`pack_bits` array, as a flat bool array."""
    if packed.size != -(-count // 8):
        raise ValueError(f"a bitmask of {count} positions takes {-(-count // 8)} bytes, not {packed.size}")
    return np.unpackbits(packed, count=count, bitorder="little").astype(bool)


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: ``scale = max|row| / 127``, ``q = round(row / scale)``; every value is within half a
    step (``scale / 2``) of ``q * scale``. A row of zeros gets scale 0 and q 0."""
    matrix = np.asarray(matrix, dtype=np.float32)
    scales = (np.abs(matrix).max(axis=1, initial=0.0) / INT8_MAX).astype(np.float32)
    divisor = np.where(scales > 0, scales, np.float32(1.0))[:, None]
    quantized = np.clip(np.rint(matrix / divisor), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, scales


def dequantize_rows(quantized: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return quantized.astype(np.float32) * scales[:, None]


def encode_sparse(weight: np.ndarray) -> dict[str, np.ndarray]:
    """A pruned matrix as ``bitmask`` (its nonzero positions), ``values`` (the kept ones in int8, row-major) and
    ``scales`` (one per row).

    A kept weight smaller than half its row's step would round to 0 and look pruned once decompressed; it is
    stored as +-1 step instead (error under one step), so the zero pattern survives exactly.
    """
    kept = weight != 0
    quantized, scales = quantize_rows(weight)
    vanished = kept & (quantized == 0)
    quantized[vanished] = np.sign(weight[vanished]).astype(np.int8)
    return {"bitmask": pack_bits(kept), "values": quantized[kept], "scales": scales}


def decode_sparse(parts: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    kept = unpack_bits(parts["bitmask"], shape[0] * shape[1]).reshape(shape)
    if parts["values"].size != int(kept.sum()) or parts["scales"].size != shape[0]:
        raise ValueError(
            f"{int(kept.sum())} kept positions and {shape[0]} rows, but {parts['values'].size} values and "
            f"{parts['scales'].size} scales"
        )
    quantized = np.zeros(shape, dtype=np.int8)
    quantized[kept] = parts["values"]
    return dequantize_rows(quantized, parts["scales"])


# -- the state dict <-> stored parts ---------------------------------------------------------------------------------
def _aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Tied tensors (the same storage under two names): each later name -> the first one, stored once."""
    first: dict[tuple, str] = {}
    aliases = {}
    for name, tensor in state.items():
        if tensor.numel() == 0:
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def _encode_tensor(tensor: torch.Tensor, sparse: bool, other_dtype: str, name: str) -> tuple[str, dict]:
    """How one tensor is stored (its encoding) and the parts that store it."""
    if not tensor.is_floating_point():
        return "copy", {"data": tensor.numpy()}
    array = tensor.float().numpy()
    if sparse:
        return "bitmask-int8", encode_sparse(array)
    if array.ndim < 2:
        return "copy", {"data": array}
    if other_dtype == "fp16":
        if np.abs(array).max(initial=0.0) > FP16_MAX:
            raise UsageError(f"{name}: values beyond fp16's range ({FP16_MAX:g}): use --other-dtype int8")
        return "fp16", {"data": array.astype(np.float16)}
    quantized, scales = quantize_rows(array.reshape(array.shape[0], -1))
    return "int8-rows", {"values": quantized, "scales": scales}


def encode_state(
    state: dict[str, torch.Tensor], sparse: Collection[str], other_dtype: str
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """The manifest (tensor name -> encoding, shape, dtype) and the stored parts (``name:part`` -> array)."""
    if other_dtype not in OTHER_DTYPES:
        raise UsageError(f"--other-dtype {other_dtype!r}: expected one of {', '.join(OTHER_DTYPES)}")
    missing = [name for name in sparse if name not in state or state[name].dim() != 2]
    if missing:
        raise ValueError(f"not 2-D weights of this model: {missing}")
    aliases = _aliases(state)
    manifest: dict[str, dict] = {}
    parts: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        entry: dict[str, Any] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
        if name in aliases:
            manifest[name] = entry | {"encoding": "alias", "of": aliases[name]}
            continue
        tensor = tensor.detach().cpu().contiguous()
        encoding, tensor_parts = _encode_tensor(tensor, name in sparse, other_dtype, name)
        manifest[name] = entry | {"encoding": encoding}
        parts |= {f"{name}:{part}": array for part, array in tensor_parts.items()}
    return manifest, parts


def _decode_tensor(entry: dict, parts: dict[str, np.ndarray]) -> torch.Tensor:
    shape, encoding = tuple(entry["shape"]), entry["encoding"]
    if encoding == "bitmask-int8":
        array = decode_sparse(parts, shape)
    elif encoding == "int8-rows":
        array = dequantize_rows(parts["values"], parts["scales"]).reshape(shape)
    elif encoding == "fp16":
        array = parts["data"].astype(np.float32)
    elif encoding == "copy":
        array = parts["data"].reshape(shape)
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    return torch.from_numpy(np.require(array, requirements=["C", "W"]))  # zstd's buffers are read-only: copied


def decode_state(manifest: dict[str, dict], parts: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The state dict back: floating tensors dense fp32 (zeros where pruned), the others as they were."""
    by_tensor: dict[str, dict[str, np.ndarray]] = {}
    for stored, array in parts.items():
        name, _, part = stored.rpartition(":")
        by_tensor.setdefault(name, {})[part] = array
    state = {}
    for name, entry in manifest.items():
        if entry.get("encoding") == "alias":
            continue
        try:
            state[name] = _decode_tensor(entry, by_tensor.get(name, {}))
        except KeyError as missing:  # a field of its manifest entry, or a stored part its encoding needs
            raise ValueError(f"{name}: {missing} missing") from None
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    return state | {name: state[entry["of"]] for name, entry in manifest.items() if entry["encoding"] == "alias"}


# -- zstd over the parts, checksum -------------------------------------------------------------------------------------
def zstd_parts(parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Each part of ZSTD_MIN_BYTES or more replaced by its zstd frame (uint8) where that is smaller; returns the
    parts and, for each replaced one, its dtype and shape."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    packed, layouts = {}, {}
    for name, array in parts.items():
        if array.nbytes >= ZSTD_MIN_BYTES:
            stream = compressor.compress(np.ascontiguousarray(array).tobytes())
            if len(stream) < array.nbytes:
                packed[name] = np.frombuffer(stream, dtype=np.uint8)
                layouts[name] = {"dtype": array.dtype.str, "shape": list(array.shape)}
                continue
        packed[name] = array
    return packed, layouts


def unzstd_parts(parts: dict[str, np.ndarray], layouts: dict[str, dict]) -> dict[str, np.ndarray]:
    decompressor = zstandard.ZstdDecompressor()
    return {
        name: np.frombuffer(decompressor.decompress(array.tobytes()), dtype=layouts[name]["dtype"]).reshape(
            layouts[name]["shape"]
        )
        if name in layouts
        else array
        for name, array in parts.items()
    }


def checksum(header: str, parts: dict[str, np.ndarray]) -> str:
    """sha256 of the manifest text and of every stored part (name, dtype, shape and bytes, in name order)."""
    digest = hashlib.sha256(header.encode())
    for name in sorted(parts):
        array = np.ascontiguousarray(parts[name])
        digest.update(f"\n{name}|{array.dtype.str}|{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# -- write -------------------------------------------------------------------------------------------------------------
def export_compressed(
    model: PreTrainedModel, folder: str | Path, sparse: Collection[str], other_dtype: str = "int8", zstd: bool = True
) -> dict[str, Any]:
    """Write ``folder/model.compressed.safetensors`` and ``config.json`` of a baked model; returns the sizes.

    ``sparse``: the state-dict names of the pruned linear weights (bitmask + int8); ``other_dtype``: int8 (per
    row) or fp16 for the other tensors of two or more dimensions; ``zstd``: compress each part where that helps.
    """
    folder = Path(folder)
    state = model.state_dict()
    manifest, parts = encode_state(state, set(sparse), other_dtype)
    layouts: dict[str, dict] = {}
    if zstd:
        parts, layouts = zstd_parts(parts)
    header = json.dumps({"tensors": manifest, "zstd": layouts}, separators=(",", ":"))
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "manifest": header,
        "sha256": checksum(header, parts),
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(parts, str(folder / WEIGHTS_FILE), metadata=metadata)
    model.config.architectures = [type(model).__name__]  # as save_pretrained does: load_compressed needs it
    model.config.save_pretrained(folder)
    return size_report(folder / WEIGHTS_FILE, state, manifest, parts, other_dtype, zstd)


def size_report(
    file: Path,
    state: dict[str, torch.Tensor],
    manifest: dict[str, dict],
    parts: dict[str, np.ndarray],
    other_dtype: str,
    zstd: bool,
) -> dict[str, Any]:
    """Bytes of the file, of the pruned weights' parts and of the rest, against the same tensors in dense fp32."""
    stored = [name for name, entry in manifest.items() if entry["encoding"] != "alias"]
    sparse = [name for name in stored if manifest[name]["encoding"] == "bitmask-int8"]

    def part_bytes(names: list[str]) -> int:
        wanted = set(names)
        return sum(array.nbytes for key, array in parts.items() if key.rpartition(":")[0] in wanted)

    def dense_bytes(names: list[str]) -> int:
        return sum(state[n].numel() * (4 if state[n].is_floating_point() else state[n].element_size()) for n in names)

    pruned_weights = sum(state[n].numel() for n in sparse)
    pruned_bytes = part_bytes(sparse)
    others = [n for n in stored if n not in set(sparse)]
    return {
        "file": str(file),
        "compressed_bytes": file.stat().st_size,
        "dense_fp32_bytes": dense_bytes(stored),
        "weights": sum(state[n].numel() for n in stored),
        "pruned_weights": pruned_weights,
        "kept_weights": sum(int(state[n].count_nonzero()) for n in sparse),
        "pruned_linear_bytes": pruned_bytes,
        "pruned_linear_dense_fp32_bytes": dense_bytes(sparse),
        "bytes_per_pruned_weight": pruned_bytes / pruned_weights if pruned_weights else 0.0,
        "other_bytes": part_bytes(others),
        "other_weights": sum(state[n].numel() for n in others),
        "other_dtype": other_dtype,
        "zstd": zstd,
    }


def size_section(report: dict[str, Any]) -> list[str]:
    """The model card's account of the sizes (Markdown lines)."""
    ratio = report["dense_fp32_bytes"] / report["compressed_bytes"]
    pruned_ratio = report["pruned_linear_dense_fp32_bytes"] / max(1, report["pruned_linear_bytes"])
    return [
        "## Compressed storage",
        "",
        f"`{WEIGHTS_FILE}` ({FORMAT_NAME} v{FORMAT_VERSION}): pruned linear weights as a bitmask + int8 values + "
        f"one fp32 scale per row; other matrices in {report['other_dtype']}"
        f"{' per row' if report['other_dtype'] == 'int8' else ''}; vectors in fp32"
        f"{'; each part zstd-compressed where that helps' if report['zstd'] else ''}.",
        "",
        "| | bytes | dense fp32 bytes | ratio | bytes per weight |",
        "| --- | --- | --- | --- | --- |",
        f"| whole file | {report['compressed_bytes']:,} | {report['dense_fp32_bytes']:,} | 1/{ratio:.1f} | "
        f"{report['compressed_bytes'] / report['weights']:.4f} |",
        f"| pruned linear weights ({report['kept_weights']:,} of {report['pruned_weights']:,} kept) | "
        f"{report['pruned_linear_bytes']:,} | {report['pruned_linear_dense_fp32_bytes']:,} | 1/{pruned_ratio:.1f} | "
        f"{report['bytes_per_pruned_weight']:.4f} |",
        f"| other tensors | {report['other_bytes']:,} | "
        f"{report['dense_fp32_bytes'] - report['pruned_linear_dense_fp32_bytes']:,} | | "
        f"{report['other_bytes'] / max(1, report['other_weights']):.4f} |",
        "",
    ]


# -- read --------------------------------------------------------------------------------------------------------------
def is_compressed_folder(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS_FILE).is_file()


def read_compressed(folder: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a compressed folder, checked (format, version, checksum) before it is decoded."""
    file = Path(folder) / WEIGHTS_FILE
    if not file.is_file():
        raise UsageError(
            f"{folder}: not a compressed export (no {WEIGHTS_FILE}; write one with `fineprune export RUN --compress`)"
        )
    try:
        with safe_open(str(file), framework="np") as reader:
            metadata = reader.metadata() or {}
            parts = {name: reader.get_tensor(name) for name in reader.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as error:
        raise UsageError(f"{file}: not a readable safetensors file (truncated?): {error}") from None
    if metadata.get("format") != FORMAT_NAME:
        raise UsageError(f"{file}: not a fineprune compressed file (its format is {metadata.get('format')!r})")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise UsageError(f"{file}: {_version_refusal(metadata.get('format_version'))}")
    header = metadata.get("manifest", "")
    if metadata.get("sha256") != checksum(header, parts):
        raise UsageError(f"{file}: checksum mismatch: the file is damaged or was altered")
    try:
        layout = json.loads(header)
        return decode_state(layout["tensors"], unzstd_parts(parts, layout["zstd"]))
    except (ValueError, KeyError, zstandard.ZstdError) as error:
        raise UsageError(f"{file}: cannot decode: {error}") from None


def _version_refusal(version: str | None) -> str:
    """Why a file's format version is not read: a later one is a newer fineprune's; any other (none, '0', '1.5')
    is no version fineprune ever wrote."""
    if version is not None and re.fullmatch(r"[0-9]+", version) and int(version) > FORMAT_VERSION:
        return (
            f"format version {version}, written by a newer fineprune; this one reads version {FORMAT_VERSION}: "
            "upgrade fineprune to read it"
        )
    stated = "no format version" if version is None else f"format version {version!r} is not one fineprune writes"
    return f"{stated} (this one reads version {FORMAT_VERSION}): the file was altered or not written by fineprune"


def load_compressed(folder: str | Path) -> PreTrainedModel:
    """The transformers model of a compressed folder, in eval mode: dense fp32, zeros where pruned."""
    folder = Path(folder)
    state = read_compressed(folder)
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)  # stock classes only
    except (OSError, ValueError) as error:
        raise UsageError(f"{folder}: cannot read config.json: {str(error).splitlines()[0]}") from None
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture or "", None)
    if model_class is None:
        raise UsageError(f"{folder / 'config.json'}: unknown architecture {architecture!r}")
    try:  # from_pretrained with a state dict: no random initialisation first, ties and buffers as transformers does
        model, info = model_class.from_pretrained(
            None, config=config, state_dict=state, dtype=torch.float32, output_loading_info=True
        )
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"{folder}: the weights do not fit {architecture}: {str(error).splitlines()[0]}") from None
    misfits = {
        key: sorted(info[key])[:3] for key in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[key]
    }
    if misfits:
        raise UsageError(f"{folder}: the weights do not fit {architecture}: {misfits}")
    return model.eval()


def decompress(folder: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write a stock transformers folder (dense fp32, zeros where pruned) from a compressed one, with its other
    files (tokenizer, fineprune config, model card); the model card's storage note is updated."""
    folder, out = Path(folder), Path(out)
    check_complete(folder)
    if out.resolve() == folder.resolve():
        raise UsageError(f"--out {out}: is the compressed folder itself; give another folder")
    with writing(out, overwrite) as staging:  # moved to `out` only once complete; an earlier `out` stays till then
        model = load_compressed(folder)
        model.save_pretrained(staging)
        skipped = {WEIGHTS_FILE, "config.json"}
        for file in folder.iterdir():
            copied = file.is_file() and file.name not in skipped and not file.name.startswith((".", "eval_results"))
            if copied:
                shutil.copy(file, staging / file.name)
        card = staging / "README.md"
        if card.is_file():
            text = card.read_text().replace(COMPRESSED_NOTE, DECOMPRESSED_NOTE)
            card.write_text(text.replace("library_name: fineprune\n", "library_name: transformers\n", 1))
        size = sum(f.stat().st_size for f in staging.glob("*.safetensors"))
    return {"out": str(out), "safetensors_bytes": size, "compressed_bytes": (folder / WEIGHTS_FILE).stat().st_size}
