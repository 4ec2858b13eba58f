"""prepare / sparsity / bake / load_pruned on tiny random encoders of four architectures."""

import copy
import json
import math

import pytest
import torch
from conftest import ARCHS, finish, tiny_model
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

import fineprune as fp
from fineprune.errors import UsageError
from fineprune.pruning import find_targets
from fineprune.pruning.masks import HardConcrete
from fineprune.pruning.methods import get_method

METHODS = ["magnitude", "movement", "soft_movement", "l0"]


def config(method: str, scope: str = "local", **kw) -> fp.PruningConfig:
    defaults = {"warmup_steps": 2, "cooldown_steps": 2}
    if method in ("magnitude", "movement"):
        defaults["final_density"] = 0.3
    return fp.PruningConfig(method=method, scope=scope, **(defaults | kw))


@pytest.mark.parametrize("arch", ARCHS)
def test_default_targets_are_the_six_matrices_of_each_layer(arch):
    model = tiny_model(arch)
    names = list(find_targets(model, config("magnitude")))
    assert len(names) == 2 * 6
    assert not any(k in n for n in names for k in ("embed", "pooler", "classifier", "pre_classifier"))


def test_include_and_exclude_patterns():
    model = tiny_model("bert")
    only_ffn = find_targets(model, config("magnitude", exclude_modules=[r"attention"]))
    assert sorted(only_ffn) == [
        "bert.encoder.layer.0.intermediate.dense",
        "bert.encoder.layer.0.output.dense",
        "bert.encoder.layer.1.intermediate.dense",
        "bert.encoder.layer.1.output.dense",
    ]
    with_head = find_targets(model, config("magnitude", target_modules=[r"classifier$", r"layer\.1\..*query"]))
    assert sorted(with_head) == ["bert.encoder.layer.1.attention.self.query", "classifier"]
    with pytest.raises(UsageError, match="no nn.Linear module"):
        find_targets(model, config("magnitude", target_modules=["nothing_like_this"]))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_bake_equals_pruned_model(arch, method, batch):
    model = fp.prepare(tiny_model(arch), config(method))
    finish(model)
    expected_kept = kept_by_definition(method, model)
    with torch.no_grad():
        pruned_logits = model(**batch).logits
    report = fp.sparsity(model)
    baked = fp.bake(model)
    assert not any("scores" in n or "parametrizations" in n or "fineprune" in n for n, _ in baked.named_parameters())
    assert fp.pruning.find_pruner(baked) is None and not hasattr(baked.config, "fineprune")
    with torch.no_grad():
        baked_logits = baked(**batch).logits
    assert (baked_logits - pruned_logits).abs().max() <= 1e-5
    zeros = sum(int((baked.get_submodule(n).weight == 0).sum()) for n in report["matrices"])
    assert zeros == report["total"] - report["remaining"] == report["total"] - expected_kept
    assert 0 < report["remaining"] < report["total"]


def kept_by_definition(method: str, model: nn.Module) -> int:
    """How many weights the method keeps at the end of its schedule, counted from the scores (or weights) by the
    method's definition, not through the pruner's masks: Top-v keeps floor(0.3 n) per matrix; soft movement keeps
    sigmoid(S) > tau_f = 0.1, at least floor(0.005 n); L0 keeps the deterministic gate's S > 0."""
    pruner = fp.get_pruner(model)
    counts = []
    for linear, p in zip(pruner.linears, pruner.parametrizations):
        n = linear.parametrizations.weight.original.numel()
        if method in ("magnitude", "movement"):
            counts.append(math.floor(0.3 * n))
        elif method == "soft_movement":
            counts.append(max(int((torch.sigmoid(p.scores.double()) > 0.1).sum()), math.floor(0.005 * n)))
        else:
            counts.append(int((p.scores > 0).sum()))
    return sum(counts)


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("method", ["magnitude", "movement"])
def test_topv_methods_hit_density_exactly(method, scope):
    model = fp.prepare(tiny_model("bert"), config(method, scope, final_density=0.1))
    finish(model)
    report = fp.sparsity(model)
    if scope == "local":
        for m in report["matrices"].values():
            assert m["remaining"] == math.floor(0.1 * m["total"])
    else:
        assert report["remaining"] == math.floor(0.1 * report["total"])


def test_magnitude_global_compares_abs_weights_across_matrices():
    model = fp.prepare(tiny_model("bert"), config("magnitude", "global", final_density=0.2))
    finish(model)
    pruner = fp.get_pruner(model)
    weights = [lin.parametrizations.weight.original.detach().abs() for lin in pruner.linears]
    masks = pruner.binary_masks()
    kept = torch.cat([w[m.bool()] for w, m in zip(weights, masks)])
    dropped = torch.cat([w[~m.bool()] for w, m in zip(weights, masks)])
    assert kept.min() >= dropped.max()


def test_sparsity_breakdown():
    model = fp.prepare(tiny_model("bert"), config("magnitude", final_density=0.5))
    finish(model)
    report = fp.sparsity(model)
    # per layer: Q K V O 32x32 each, FFN 64x32 and 32x64: 4*1024 + 2*2048 = 8192 weights, half kept
    assert report["total"] == 2 * 8192 and report["remaining"] == 8192
    assert report["layers"] == {0: 0.5, 1: 0.5}
    assert report["kinds"] == {"attention": 0.5, "ffn": 0.5}
    query = report["matrices"]["bert.encoder.layer.0.attention.self.query"]
    assert query == {"kind": "attention", "layer": 0, "remaining": 512, "total": 1024, "density": 0.5}


def test_schedule_drives_the_masks():
    model = fp.prepare(tiny_model("bert"), config("magnitude", final_density=0.1, warmup_steps=10, cooldown_steps=20))
    pruner = fp.get_pruner(model)
    pruner.set_step(0, 110)
    assert fp.sparsity(model)["density"] == 1.0
    pruner.set_step(50, 110)  # cubic midpoint: 0.2125 of each matrix
    assert fp.sparsity(model)["matrices"]["bert.encoder.layer.0.attention.self.query"]["remaining"] == 217
    pruner.set_step(95, 110)
    assert fp.sparsity(model)["density"] == pytest.approx(0.1, abs=1e-3)
    with pytest.raises(UsageError, match="not more than warm-up"):
        pruner.set_step(0, 25)


def topv_of_scores(pruner, density: float) -> list[torch.Tensor]:
    """Top-v of each matrix's current scores, computed here from the scores alone."""
    masks = []
    for p in pruner.parametrizations:
        flat = p.scores.detach().flatten()
        kept = torch.zeros_like(flat, dtype=torch.bool)
        kept[flat.argsort(descending=True, stable=True)[: math.floor(density * flat.numel())]] = True
        masks.append(kept.view_as(p.scores))
    return masks


@pytest.mark.parametrize("fused", [True, False])
def test_masks_follow_each_optimizer_step_and_are_cached_between(batch, fused):
    """The fused AdamW step changes the scores without bumping their version counter: the masks must follow it."""
    model = fp.prepare(tiny_model("bert"), config("movement", warmup_steps=0, cooldown_steps=1)).train()
    pruner = fp.get_pruner(model)
    pruner.set_step(5, 5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.5, fused=fused, foreach=None if fused else False)
    labels = torch.tensor([0, 1, 2])
    for _ in range(2):
        first = pruner.binary_masks()
        model(**batch)
        assert pruner.binary_masks()[0] is first[0]  # nothing changed: no recomputation
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        expected = topv_of_scores(pruner, 0.3)
        assert not all(torch.equal(m.bool(), e) for m, e in zip(first, expected))  # the step changed the Top-v
        assert all(torch.equal(m.bool(), e) for m, e in zip(pruner.binary_masks(), expected))


@pytest.mark.parametrize("structure", ["unstructured", "heads_neurons"])
def test_cached_masks_take_a_byte_per_weight_and_group_masks_a_vector(batch, structure):
    """The masks the pruner keeps: booleans, one byte per weight; for heads and neurons a broadcast view of one
    row or column per matrix. The model computes with them exactly as with float masks."""
    model = fp.prepare(tiny_model("bert"), config("movement", structure=structure)).train()
    pruner = fp.get_pruner(finish(model))
    masks = pruner.binary_masks()
    storage = {m.untyped_storage().data_ptr(): m.untyped_storage().nbytes() for m in masks}
    weights = sum(m.numel() for m in masks)
    assert all(m.dtype == torch.bool for m in masks)
    if structure == "unstructured":
        assert sum(storage.values()) == weights
    else:
        assert sum(storage.values()) == sum(m.shape[0] if m.stride(1) == 0 else m.shape[1] for m in masks)
    for linear, mask in zip(pruner.linears, masks, strict=True):
        original = linear.parametrizations.weight.original
        assert torch.equal(linear.weight, original * mask.float())
    assert not all(bool(m.all()) for m in masks)


def test_fused_adamw_step_then_save_and_load_give_the_same_masks(tmp_path):
    """The audit's reproduction: one fused AdamW step, save_pretrained, load_pruned: the masks must agree."""
    torch.manual_seed(0)
    bert = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    model = fp.prepare(BertForSequenceClassification(bert), config("movement", warmup_steps=0, cooldown_steps=1))
    pruner = fp.get_pruner(model)
    pruner.set_step(5, 5)
    pruner.binary_masks()  # cached before the step
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.5, fused=True)
    ids = torch.randint(5, 99, (4, 8), generator=torch.Generator().manual_seed(0))
    model.train()(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    optimizer.step()
    model.save_pretrained(tmp_path)
    loaded = fp.get_pruner(fp.load_pruned(tmp_path))
    for live, reloaded in zip(pruner.binary_masks(), loaded.binary_masks(), strict=True):
        assert torch.equal(live, reloaded)


def test_invalidate_after_changing_scores_behind_autograd(batch):
    """``.data`` writes bump no version counter and take no optimizer step: invalidate() is the documented way."""
    model = fp.prepare(tiny_model("bert"), config("movement"))
    pruner = fp.get_pruner(model)
    pruner.set_step(10, 10)
    pruner.binary_masks()
    scores = pruner.parametrizations[0].scores
    scores.data.copy_(torch.randn(scores.shape, generator=torch.Generator().manual_seed(5)))
    pruner.invalidate()
    assert torch.equal(pruner.binary_masks()[0].bool(), topv_of_scores(pruner, 0.3)[0])


def test_scores_get_the_straight_through_gradient(batch):
    model = fp.prepare(tiny_model("bert"), config("movement"))
    model.train()
    pruner = fp.get_pruner(model)
    pruner.set_step(10, 10)
    model(**batch, labels=torch.tensor([0, 1, 2])).loss.backward()
    linear = pruner.linears[0]
    weight = linear.parametrizations.weight.original
    # dL/dW = dL/dW' * M  and  dL/dS = dL/dW' * W, so where the mask is 1: dL/dS == dL/dW * W
    mask = pruner.binary_masks()[0].bool()
    scores_grad = pruner.parametrizations[0].scores.grad
    assert torch.allclose(scores_grad[mask], (weight.grad * weight.detach())[mask], atol=1e-7)
    assert (weight.grad[~mask] == 0).all() and scores_grad[~mask].abs().sum() > 0


def test_regularizers_on_known_scores():
    model = fp.prepare(tiny_model("bert"), config("soft_movement", regularization_lambda=2.0))
    pruner = fp.get_pruner(model)
    with torch.no_grad():
        for i, p in enumerate(pruner.parametrizations):
            p.scores.fill_(0.0 if i % 2 == 0 else math.log(3))  # sigmoid: 0.5 and 0.75
    pruner.set_step(10, 10)  # tau at its final value: lambda = lambda_f
    assert pruner.lambda_value == 2.0
    assert float(pruner.regularizer().detach()) == pytest.approx(2.0 * 0.625)
    pruner.set_step(0, 10)  # tau = 0 in warm-up: lambda(t) = lambda_f * tau / tau_f = 0
    assert pruner.regularizer() is None

    model = fp.prepare(tiny_model("bert"), config("l0"))
    pruner = fp.get_pruner(model)
    # expected L0: sigmoid(log 9 - 2/3 log(0.1/1.1)) for every gate at initialisation, with constant lambda 125
    expected = 1 / (1 + math.exp(-(math.log(9) - (2 / 3) * math.log(0.1 / 1.1))))
    assert float(pruner.regularizer().detach()) == pytest.approx(125 * expected, rel=1e-6)


def test_save_and_load_keep_scores_masks_and_clock(tmp_path, batch):
    model = fp.prepare(tiny_model("mpnet"), config("soft_movement", final_density=0.2))
    finish(model)
    pruner = fp.get_pruner(model)
    pruner.set_step(7, 10)
    pruner.multipliers.copy_(torch.tensor([0.75, 2.5]))
    model.save_pretrained(tmp_path)
    loaded = fp.load_pruned(tmp_path)
    other = fp.get_pruner(loaded)
    assert other._clock == (7, 10) and other.multipliers.tolist() == [0.75, 2.5]
    for a, b in zip(pruner.parametrizations, other.parametrizations):
        assert torch.equal(a.scores, b.scores)
    for a, b in zip(pruner.binary_masks(), other.binary_masks()):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_baked_folder_loads_without_fineprune(tmp_path, batch):
    model = fp.prepare(tiny_model("roberta"), config("movement"))
    finish(model)
    with torch.no_grad():
        expected = model(**batch).logits
    fp.bake(model).save_pretrained(tmp_path)
    assert "fineprune" not in (tmp_path / "config.json").read_text()
    stock = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (stock(**batch).logits - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "movement", "final_density": 1.5}, "less than or equal to 1"),
        ({"method": "movement", "final_density": 0.0}, "greater than 0"),
        ({"method": "movement"}, "needs final_density"),
        ({"method": "magnitude", "final_density": 0.5, "initial_density": 0.4}, "above initial_density"),
        ({"method": "random"}, "soft_movement"),
        ({"method": "l0", "regularizer": "l1"}, "Extra inputs are not permitted"),
        ({"method": "movement", "final_density": 0.1, "warmup_steps": 1.5}, "whole steps or a fraction"),
        ({"method": "magnitude", "final_density": 0.1, "freeze_weights": True}, "method magnitude has none"),
        ({"method": "none", "freeze_weights": True}, "method none has none: its masks could never learn"),
        ({"method": "movement", "final_density": 0.1, "regularization_normalize": "loss"}, "movement has none"),
        (
            {"method": "l0", "final_density": 0.1, "regularization_normalize": "loss"},
            "regularization_normalize loss scales lambda . R: a steered l0 run replaces it by its Lagrangian",
        ),
        ({"method": "l0", "l0_stretch": (0.0, 1.1)}, r"l0_stretch \(0.0, 1.1\) must be \(l, r\) with l < 0 < 1 < r"),
        ({"method": "l0", "l0_stretch": (-0.1, 1.0)}, "l < 0 < 1 < r"),
        ({"method": "l0", "l0_temperature": 0}, "l0_temperature\n  Input should be greater than 0"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        fp.PruningConfig(**kwargs)


def test_block_shape_must_divide_weights():
    with pytest.raises(UsageError, match="does not divide"):
        fp.prepare(tiny_model("bert"), config("movement", block_shape=(5, 1)))


def test_block_granularity_prunes_whole_rows():
    model = fp.prepare(tiny_model("bert"), config("magnitude", final_density=0.25, block_shape=(1, 32)))
    finish(model)
    pruner = fp.get_pruner(model)
    query = pruner.binary_masks()[0]  # 32 x 32: 8 of 32 rows kept, each whole
    assert query.all(dim=1).sum() == 8 and (query.sum(dim=1) % 32 == 0).all()


def test_prepare_twice_is_refused():
    model = fp.prepare(tiny_model("bert"), config("movement"))
    with pytest.raises(UsageError, match="already prepared"):
        fp.prepare(model, config("movement"))


def test_folders_of_the_lambda_controller_still_load(tmp_path):
    """Runs saved before the Lagrangian carry controller_gain in their config and log_lambda_scale in their
    weights: they load, with both ignored."""
    model = fp.prepare(tiny_model("bert"), config("soft_movement", final_density=0.2))
    finish(model)
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    saved["fineprune"]["controller_gain"] = 0.05
    config_file.write_text(json.dumps(saved))
    weights = load_file(tmp_path / "model.safetensors")
    weights["fineprune_pruner.log_lambda_scale"] = torch.tensor(1.5, dtype=torch.float64)
    del weights["fineprune_pruner.multipliers"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = fp.get_pruner(fp.load_pruned(tmp_path))
    assert loaded.multipliers.tolist() == [0.0, 0.0]
    for a, b in zip(fp.get_pruner(model).binary_masks(), loaded.binary_masks(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["magnitude", "movement"])
def test_baking_a_deep_copy_leaves_the_other_model_alone(method, batch):
    """torch's parametrize gives deep copies one shared class: baking one must not break the other."""
    model = fp.prepare(tiny_model("bert"), config(method))
    finish(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        expected = twin(**batch).logits
    baked = fp.bake(model)
    with torch.no_grad():
        assert torch.equal(twin(**batch).logits, expected)  # the twin still has its parametrizations
        assert torch.equal(fp.bake(twin)(**batch).logits, baked(**batch).logits)


def test_l0_expected_density_is_the_weight_weighted_open_probability():
    """E[density] = sum over scores of P(gate != 0) / number of scores, every score gating one block alike;
    P(gate != 0) = sigmoid(S - beta log(-l / r)) with beta 2/3, l -0.1, r 1.1, computed here in float64."""
    scores = [torch.tensor([[0.0, 2.0]]), torch.full((3, 2), -1.0)]
    method = get_method("l0")
    shift = (2 / 3) * math.log(0.1 / 1.1)
    p = [1 / (1 + math.exp(-(s - shift))) for s in (0.0, 2.0, -1.0)]
    expected = (p[0] + p[1] + 6 * p[2]) / 8  # not the mean of the two matrices' means
    assert float(method.expected_density(config("l0"), scores)) == pytest.approx(expected, rel=1e-6)
    assert HardConcrete().open_probability(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(
        p[0], rel=1e-12
    )


def test_l0_gate_settings_reach_the_masks_the_expected_density_and_the_penalty():
    """Temperature 0.4, stretch (-0.3, 1.05), by hand in float64: P(gate != 0) = sigmoid(S - 0.4 log(0.3 / 1.05));
    the evaluation gate keeps S > log(0.8 / 0.55) = 0.375, so the matrices at S = 0.2 (kept by the paper's gate)
    are pruned."""
    settings = config("l0", l0_temperature=0.4, l0_stretch=(-0.3, 1.05), regularization_lambda=2.0)
    model = fp.prepare(tiny_model("bert"), settings)
    pruner = fp.get_pruner(model)
    values = [-1.0, 0.2, 1.0]
    with torch.no_grad():
        for i, p in enumerate(pruner.parametrizations):
            p.scores.fill_(values[i % 3])
    sizes = [p.scores.numel() for p in pruner.parametrizations]
    opened = [1 / (1 + math.exp(-(values[i % 3] - 0.4 * math.log(0.3 / 1.05)))) for i in range(len(sizes))]
    expected = sum(n * q for n, q in zip(sizes, opened)) / sum(sizes)
    assert pruner.expected_density() == pytest.approx(expected, rel=1e-6)
    assert float(pruner.regularizer().detach()) == pytest.approx(2.0 * sum(opened) / len(opened), rel=1e-6)
    kept = sum(n for i, n in enumerate(sizes) if values[i % 3] == 1.0)
    assert pruner.density() == kept / sum(sizes)


class TwoMatrices(nn.Module):
    """An encoder of one layer with two linear layers of different sizes, in float64."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 4))]).double()


@pytest.mark.parametrize("normalize", ["none", "loss"])
def test_the_penalty_on_two_matrices_of_different_sizes_by_hand(normalize):
    """R is the mean of the two matrices' mean sigmoid(S) (6 and 8 scores), not the mean over all 14; with
    regularization_normalize loss the penalty is lambda * R * L with L detached: dP/dS = lambda * L * sigmoid'(S) /
    (2 * n) for a matrix of n scores, and L's own inputs get nothing. Every number by hand in float64."""
    settings = fp.PruningConfig(
        method="soft_movement", initial_threshold=0.1, regularization_lambda=3.0, regularization_normalize=normalize
    )
    pruner = fp.get_pruner(fp.prepare(TwoMatrices(), settings))
    small = [[-1.0, 0.0, 2.0], [0.5, -0.25, 1.5]]
    large = [[3.0, -2.0], [0.0, 0.75], [-0.5, 1.0], [2.5, -3.0]]
    with torch.no_grad():
        for p, values in zip(pruner.parametrizations, (small, large)):
            p.scores.copy_(torch.tensor(values, dtype=torch.float64))

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    flat = [[v for row in m for v in row] for m in (small, large)]
    r = (sum(map(sigmoid, flat[0])) / 6 + sum(map(sigmoid, flat[1])) / 8) / 2
    assert r != pytest.approx(sum(map(sigmoid, flat[0] + flat[1])) / 14, rel=1e-3)  # the sizes matter
    x = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    loss = 2 * x  # L = 0.7
    scale = 0.7 if normalize == "loss" else 1.0
    penalty = pruner.regularizer(loss)
    assert penalty.item() == pytest.approx(3.0 * scale * r, rel=1e-12)
    penalty.backward()
    assert x.grad is None
    for p, values, n in zip(pruner.parametrizations, flat, (6, 8)):
        expected = [3.0 * scale * sigmoid(v) * (1 - sigmoid(v)) / (2 * n) for v in values]
        assert p.scores.grad.flatten().tolist() == pytest.approx(expected, rel=1e-12)
    if normalize == "loss":
        with pytest.raises(ValueError, match="pass the loss the penalty is added to"):
            pruner.regularizer()
