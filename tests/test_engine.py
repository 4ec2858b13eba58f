"""prepare / sparsity / bake / load_pruned on tiny random encoders of four architectures."""

import math

import pytest
import torch
from conftest import ARCHS, tiny_model
from pydantic import ValidationError
from torch import nn
from transformers import AutoModelForSequenceClassification

import fineprune as fp
from fineprune.errors import UsageError
from fineprune.pruning import find_targets

METHODS = ["magnitude", "movement", "soft_movement", "l0"]


def config(method: str, scope: str = "local", **kw) -> fp.PruningConfig:
    defaults = {"warmup_steps": 2, "cooldown_steps": 2}
    if method in ("magnitude", "movement"):
        defaults["final_density"] = 0.3
    return fp.PruningConfig(method=method, scope=scope, **(defaults | kw))


def finish(model: nn.Module) -> None:
    """Move the schedule to its end and give learned scores a spread, as training would."""
    pruner = fp.get_pruner(model)
    pruner.set_step(10, 10)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in pruner.parametrizations:
            if p.scores is not None:
                p.scores.add_(torch.randn_like(p.scores) * 2)


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
    assert zeros == report["total"] - report["remaining"]
    assert 0 < report["remaining"] < report["total"]


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


def test_masks_are_cached_until_scores_change(batch):
    model = fp.prepare(tiny_model("bert"), config("movement"))
    pruner = fp.get_pruner(model)
    pruner.set_step(5, 10)
    first = pruner.binary_masks()
    model(**batch)
    assert pruner.binary_masks()[0] is first[0]  # nothing changed: no recomputation
    with torch.no_grad():
        pruner.parametrizations[0].scores.add_(1.0)
    assert pruner.binary_masks()[0] is not first[0]


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
    pruner.log_lambda_scale.fill_(0.75)
    model.save_pretrained(tmp_path)
    loaded = fp.load_pruned(tmp_path)
    other = fp.get_pruner(loaded)
    assert other._clock == (7, 10) and float(other.log_lambda_scale) == 0.75
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
