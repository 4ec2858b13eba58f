"""structure: heads_neurons: groups found by shape in four architectures, group scores and masks against values
computed here by hand (loops, float64), the straight-through gradient against autograd on an explicitly masked
model, thresholds and gates per group, the regularizers weighted by group size, and the accounting."""

import math

import numpy as np
import pytest
import torch
from conftest import ARCHS, tiny_model
from pydantic import ValidationError

import fineprune as fp
from fineprune.errors import UsageError
from fineprune.pruning.masks import L0_BETA, L0_LEFT, L0_RIGHT

HIDDEN, HEADS, HEAD_DIM, FFN, LAYERS = 32, 4, 8, 64, 2
HEAD_SIZE, NEURON_SIZE = 4 * HEAD_DIM * HIDDEN, 2 * HIDDEN
UNIT = math.gcd(HEAD_SIZE, NEURON_SIZE)
LAYER_SIZE = HEADS * HEAD_SIZE + FFN * NEURON_SIZE
BERT = "bert.encoder.layer.{}."
BERT_MATRICES = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]
BERT_FFN = ["intermediate.dense", "output.dense"]
LAYER_MATRICES = {
    "bert": BERT_MATRICES + BERT_FFN,
    "roberta": BERT_MATRICES + BERT_FFN,
    "mpnet": ["attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", *BERT_FFN],
    "distilbert": [
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
    ],
}
PREFIX = {
    "bert": "bert.encoder.layer.{}.",
    "roberta": "roberta.encoder.layer.{}.",
    "mpnet": "mpnet.encoder.layer.{}.",
    "distilbert": "distilbert.transformer.layer.{}.",
}


def structured(method: str, **kw) -> fp.PruningConfig:
    defaults = {"warmup_steps": 2, "cooldown_steps": 2, "structure": "heads_neurons"}
    if method in ("magnitude", "movement"):
        defaults["final_density"] = 0.4
    return fp.PruningConfig(method=method, **(defaults | kw))


def bert_weights(model, layer: int) -> list[np.ndarray]:
    """The six matrices of one BERT layer (fine-tuned values, before masking), float64."""
    prefix = BERT.format(layer)
    out = []
    for name in BERT_MATRICES + BERT_FFN:
        linear = model.get_submodule(prefix + name)
        weight = linear.parametrizations.weight.original if hasattr(linear, "parametrizations") else linear.weight
        out.append(weight.detach().double().numpy())
    return out


def rms_by_hand(model, layer: int) -> tuple[list[float], list[float]]:
    """Each head's and neuron's L2 norm over every weight it owns, divided by sqrt(its weight count): loops."""
    q, k, v, o, f_in, f_out = bert_weights(model, layer)
    heads = []
    for h in range(HEADS):
        total = 0.0
        for matrix in (q, k, v):
            for row in range(h * HEAD_DIM, (h + 1) * HEAD_DIM):
                total += float(np.sum(matrix[row, :] ** 2))
        for col in range(h * HEAD_DIM, (h + 1) * HEAD_DIM):
            total += float(np.sum(o[:, col] ** 2))
        heads.append(math.sqrt(total) / math.sqrt(HEAD_SIZE))
    neurons = [
        math.sqrt(float(np.sum(f_in[j, :] ** 2) + np.sum(f_out[:, j] ** 2))) / math.sqrt(NEURON_SIZE)
        for j in range(FFN)
    ]
    return heads, neurons


def select_by_hand(values: list[float], sizes: list[int], density: float) -> list[bool]:
    """Top-v by weight: groups by value (ties: earlier first) take units of gcd size while the budget
    floor(density * units) lasts; the group the budget cuts through is kept if at least half of it fits."""
    budget = math.floor(round(density * sum(sizes) / UNIT, 9))
    kept, used = [False] * len(values), 0
    for i in sorted(range(len(values)), key=lambda i: (-values[i], i)):
        units = sizes[i] // UNIT
        inside = min(max(budget - used, 0), units)
        kept[i] = 2 * inside >= units
        used += units
    return kept


def masks_by_hand(head_kept: list[bool], neuron_kept: list[bool]) -> list[np.ndarray]:
    """The six matrices' masks of one layer from its kept heads and neurons, entry by entry."""
    q = np.zeros((HEADS * HEAD_DIM, HIDDEN))
    o = np.zeros((HIDDEN, HEADS * HEAD_DIM))
    for h, keep in enumerate(head_kept):
        if keep:
            q[h * HEAD_DIM : (h + 1) * HEAD_DIM, :] = 1
            o[:, h * HEAD_DIM : (h + 1) * HEAD_DIM] = 1
    f_in, f_out = np.zeros((FFN, HIDDEN)), np.zeros((HIDDEN, FFN))
    for j, keep in enumerate(neuron_kept):
        if keep:
            f_in[j, :] = 1
            f_out[:, j] = 1
    return [q, q, q, o, f_in, f_out]


def pruner_masks(model, layer: int) -> list[np.ndarray]:
    pruner = fp.get_pruner(model)
    by_name = dict(zip(pruner.names, pruner.binary_masks(), strict=True))
    return [by_name[BERT.format(layer) + name].numpy() for name in BERT_MATRICES + BERT_FFN]


def owner_scores(model, layer: int) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """The heads' scores (held by the query's parametrization) and the neurons' (held by FFN-in's)."""
    prefix = BERT.format(layer)
    heads = model.get_submodule(prefix + BERT_MATRICES[0]).parametrizations.weight[0].scores
    neurons = model.get_submodule(prefix + BERT_FFN[0]).parametrizations.weight[0].scores
    return heads, neurons


def set_random_scores(model, seed: int = 4) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in range(LAYERS):
            for scores in owner_scores(model, layer):
                scores.copy_(torch.randn(scores.shape, generator=generator))


# -- the groups --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_groups_are_found_by_shape_in_every_architecture(arch):
    model = fp.prepare(tiny_model(arch), structured("magnitude"))
    pruner = fp.get_pruner(model)
    layout = pruner.groups
    assert [(s.kind, s.layer, s.count, s.size) for s in layout.sets] == [
        (kind, layer, count, size)
        for layer in range(LAYERS)
        for kind, count, size in (("heads", HEADS, HEAD_SIZE), ("neurons", FFN, NEURON_SIZE))
    ]
    for group_set in layout.sets:
        names = [pruner.names[p.matrix] for p in group_set.slices]
        expected = LAYER_MATRICES[arch][:4] if group_set.kind == "heads" else LAYER_MATRICES[arch][4:]
        assert names == [PREFIX[arch].format(group_set.layer) + n for n in expected]
        axes = [p.axis for p in group_set.slices]
        assert axes == ([0, 0, 0, 1] if group_set.kind == "heads" else [0, 1])


@pytest.mark.parametrize("density", [0.3, 0.55])
@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("method", ["magnitude", "movement"])
def test_topv_keeps_the_best_groups_to_the_weight_budget(method, scope, density):
    model = fp.prepare(tiny_model("bert"), structured(method, scope=scope, final_density=density))
    fp.get_pruner(model).set_step(10, 10)
    if method == "movement":
        set_random_scores(model)
    values = []
    for layer in range(LAYERS):
        if method == "magnitude":
            heads, neurons = rms_by_hand(model, layer)
        else:
            heads, neurons = (s.detach().double().tolist() for s in owner_scores(model, layer))
        values.append(heads + neurons)
    sizes = [HEAD_SIZE] * HEADS + [NEURON_SIZE] * FFN
    if scope == "local":
        kept = [select_by_hand(v, sizes, density) for v in values]
    else:
        flat = select_by_hand(values[0] + values[1], sizes * LAYERS, density)
        kept = [flat[: len(sizes)], flat[len(sizes) :]]
    remaining = 0
    for layer in range(LAYERS):
        expected = masks_by_hand(kept[layer][:HEADS], kept[layer][HEADS:])
        for got, want in zip(pruner_masks(model, layer), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        remaining += HEAD_SIZE * sum(kept[layer][:HEADS]) + NEURON_SIZE * sum(kept[layer][HEADS:])
    report = fp.sparsity(model)
    assert report["remaining"] == remaining and report["total"] == LAYERS * LAYER_SIZE
    pools = LAYERS if scope == "local" else 1  # within half a head of the budget in each pool
    assert abs(report["remaining"] - density * report["total"]) <= pools * (HEAD_SIZE / 2 + UNIT)


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("method", ["magnitude", "movement"])
def test_per_kind_budget_keeps_the_density_of_heads_and_of_neurons_apart(method, scope):
    """group_budget per_kind: the heads' Top-v over the heads' weights alone, the neurons' over theirs (per layer,
    or across the layers with global), by hand."""
    density = 0.3
    model = fp.prepare(
        tiny_model("bert"), structured(method, scope=scope, final_density=density, group_budget="per_kind")
    )
    fp.get_pruner(model).set_step(10, 10)
    if method == "movement":
        set_random_scores(model)
    by_layer = [
        rms_by_hand(model, layer)
        if method == "magnitude"
        else tuple(s.detach().double().tolist() for s in owner_scores(model, layer))
        for layer in range(LAYERS)
    ]
    if scope == "local":
        heads = [select_by_hand(h, [HEAD_SIZE] * HEADS, density) for h, _ in by_layer]
        neurons = [select_by_hand(n, [NEURON_SIZE] * FFN, density) for _, n in by_layer]
    else:
        all_heads = select_by_hand(by_layer[0][0] + by_layer[1][0], [HEAD_SIZE] * HEADS * LAYERS, density)
        all_neurons = select_by_hand(by_layer[0][1] + by_layer[1][1], [NEURON_SIZE] * FFN * LAYERS, density)
        heads = [all_heads[:HEADS], all_heads[HEADS:]]
        neurons = [all_neurons[:FFN], all_neurons[FFN:]]
    for layer in range(LAYERS):
        for got, want in zip(pruner_masks(model, layer), masks_by_hand(heads[layer], neurons[layer]), strict=True):
            np.testing.assert_array_equal(got, want)
    kept_heads, kept_neurons = sum(map(sum, heads)), sum(map(sum, neurons))
    assert kept_heads == round(density * HEADS * LAYERS) and abs(kept_neurons - density * FFN * LAYERS) <= 1


def test_per_kind_budget_is_for_top_v_on_groups():
    with pytest.raises(ValidationError, match="group_budget per_kind .* needs structure heads_neurons"):
        fp.PruningConfig(method="magnitude", final_density=0.3, group_budget="per_kind")
    with pytest.raises(ValidationError, match=r"method magnitude or movement \(got heads_neurons, soft_movement\)"):
        structured("soft_movement", group_budget="per_kind")


def test_scores_from_weights_start_at_magnitudes_masks():
    magnitude = fp.prepare(tiny_model("bert"), structured("magnitude", final_density=0.3))
    movement = fp.prepare(tiny_model("bert"), structured("movement", final_density=0.3, scores_init_from_weights=True))
    for model in (magnitude, movement):
        fp.get_pruner(model).set_step(10, 10)
    for got, want in zip(fp.get_pruner(movement).binary_masks(), fp.get_pruner(magnitude).binary_masks(), strict=True):
        assert torch.equal(got, want)


def test_straight_through_gradient_of_a_group_score_sums_over_its_slices(batch):
    model = fp.prepare(tiny_model("bert"), structured("movement", final_density=0.5))
    fp.get_pruner(model).set_step(10, 10)
    set_random_scores(model)
    weights = torch.randn(3, 3, generator=torch.Generator().manual_seed(2))
    (model(**batch).logits * weights).sum().backward()

    # The same forward built explicitly: a stock model whose six matrices per layer are W' = W * M, leaves of autograd.
    clean = tiny_model("bert")
    masked = {}
    for layer in range(LAYERS):
        for name, mask in zip(BERT_MATRICES + BERT_FFN, pruner_masks(model, layer), strict=True):
            weight = clean.get_submodule(BERT.format(layer) + name).weight.detach()
            masked[BERT.format(layer) + name + ".weight"] = (weight * torch.from_numpy(mask).float()).requires_grad_()
    logits = torch.func.functional_call(clean, masked, args=(), kwargs=batch).logits
    (logits * weights).sum().backward()

    for layer in range(LAYERS):
        q, k, v, o, f_in, f_out = (
            masked[BERT.format(layer) + n + ".weight"].grad.double().numpy() * w
            for n, w in zip(BERT_MATRICES + BERT_FFN, bert_weights(clean, layer), strict=True)
        )
        heads = [
            sum(float(m[h * HEAD_DIM : (h + 1) * HEAD_DIM, :].sum()) for m in (q, k, v))
            + float(o[:, h * HEAD_DIM : (h + 1) * HEAD_DIM].sum())
            for h in range(HEADS)
        ]
        neurons = [float(f_in[j, :].sum() + f_out[:, j].sum()) for j in range(FFN)]
        head_scores, neuron_scores = owner_scores(model, layer)
        np.testing.assert_allclose(head_scores.grad.double().numpy(), heads, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(neuron_scores.grad.double().numpy(), neurons, rtol=1e-4, atol=1e-7)
        # the weights get the masked gradient dL/dW' * M
        query = model.get_submodule(BERT.format(layer) + BERT_MATRICES[0]).parametrizations.weight.original
        expected = masked[BERT.format(layer) + BERT_MATRICES[0] + ".weight"].grad * torch.from_numpy(
            pruner_masks(model, layer)[0]
        )
        torch.testing.assert_close(query.grad, expected.float(), rtol=1e-4, atol=1e-7)


def test_only_each_sets_first_matrix_holds_scores():
    pruner = fp.get_pruner(fp.prepare(tiny_model("bert"), structured("movement")))
    held = [p.scores.shape if p.scores is not None else None for p in pruner.parametrizations]
    assert held == [(HEADS,), None, None, None, (FFN,), None] * LAYERS


# -- thresholds, gates, regularizers ----------------------------------------------------------------------------------
HEAD_SCORES = [3.0, -5.0, 0.5, -0.5]


def known_scores(model) -> list[tuple[list[float], list[float]]]:
    """Head scores HEAD_SCORES and neuron scores j / 8 - 4 (layer 0), their negatives (layer 1)."""
    chosen = []
    with torch.no_grad():
        for layer in range(LAYERS):
            sign = 1 if layer == 0 else -1
            heads, neurons = [sign * s for s in HEAD_SCORES], [sign * (j / 8 - 4) for j in range(FFN)]
            head_scores, neuron_scores = owner_scores(model, layer)
            head_scores.copy_(torch.tensor(heads))
            neuron_scores.copy_(torch.tensor(neurons))
            chosen.append((heads, neurons))
    return chosen


@pytest.mark.parametrize("method", ["soft_movement", "l0"])
def test_thresholds_and_gates_decide_per_group(method):
    model = fp.prepare(tiny_model("bert"), structured(method, min_density=0.0, final_threshold=0.3))
    fp.get_pruner(model).set_step(10, 10)
    for layer, (heads, neurons) in enumerate(known_scores(model)):
        if method == "soft_movement":  # sigmoid(S) > tau = 0.3
            keep = [1 / (1 + math.exp(-s)) > 0.3 for s in heads + neurons]
        else:  # the binary gate: log alpha > 0
            keep = [s > 0 for s in heads + neurons]
        for got, want in zip(pruner_masks(model, layer), masks_by_hand(keep[:HEADS], keep[HEADS:]), strict=True):
            np.testing.assert_array_equal(got, want)


def test_regularizers_weigh_each_group_by_its_weights():
    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    sizes = [HEAD_SIZE] * HEADS + [NEURON_SIZE] * FFN
    soft = fp.prepare(tiny_model("bert"), structured("soft_movement", regularization_lambda=2.0))
    soft_pruner = fp.get_pruner(soft)
    soft_pruner.set_step(10, 10)
    per_layer = [
        sum(n * sigmoid(s) for n, s in zip(sizes, heads + neurons, strict=True)) / LAYER_SIZE
        for heads, neurons in known_scores(soft)
    ]
    assert float(soft_pruner.regularizer().detach()) == pytest.approx(2.0 * sum(per_layer) / LAYERS, rel=1e-5)

    l0 = fp.prepare(tiny_model("bert"), structured("l0"))
    shift = L0_BETA * math.log(-L0_LEFT / L0_RIGHT)
    opened = sum(
        n * sigmoid(s - shift)
        for heads, neurons in known_scores(l0)
        for n, s in zip(sizes, heads + neurons, strict=True)
    )
    assert fp.get_pruner(l0).expected_density() == pytest.approx(opened / (LAYERS * LAYER_SIZE), rel=1e-5)


def test_l0_samples_one_gate_per_group_shared_by_its_matrices():
    model = fp.prepare(tiny_model("bert"), structured("l0"))
    pruner = fp.get_pruner(model)
    index = {name: i for i, name in enumerate(pruner.names)}
    layer0 = [index[BERT.format(0) + n] for n in BERT_MATRICES]
    torch.manual_seed(0)
    q, k, v, o = (pruner.mask(i, training=True) for i in layer0)  # one forward's masks
    gates = q[::HEAD_DIM, 0]
    assert q.requires_grad and int((gates > 0).sum()) > 0 and bool(((gates > 0) & (gates < 1)).any())
    for h, gate in enumerate(gates):
        rows, cols = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM), slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        for matrix in (q, k, v):
            assert torch.equal(matrix[rows], gate.expand(HEAD_DIM, HIDDEN))
        assert torch.equal(o[:, cols], gate.expand(HIDDEN, HEAD_DIM))
    again = pruner.mask(layer0[0], training=True)  # the next forward draws again
    assert not torch.equal(again, q)
    o.sum().backward()
    assert owner_scores(model, 0)[0].grad is not None


# -- accounting, saving, errors ---------------------------------------------------------------------------------------
def test_sparsity_counts_whole_groups_per_matrix():
    model = fp.prepare(tiny_model("bert"), structured("movement", final_density=0.4))
    fp.get_pruner(model).set_step(10, 10)
    sizes = [HEAD_SIZE] * HEADS + [NEURON_SIZE] * FFN
    kept = [select_by_hand(heads + neurons, sizes, 0.4) for heads, neurons in known_scores(model)]
    report = fp.sparsity(model)
    for layer, keep in enumerate(kept):
        heads, neurons = sum(keep[:HEADS]), sum(keep[HEADS:])
        assert 0 < heads < HEADS and 0 < neurons < FFN
        matrices = {n: report["matrices"][BERT.format(layer) + n]["remaining"] for n in BERT_MATRICES + BERT_FFN}
        assert all(matrices[n] == heads * HEAD_DIM * HIDDEN for n in BERT_MATRICES)
        assert all(matrices[n] == neurons * HIDDEN for n in BERT_FFN)
        assert report["layers"][layer] == (heads * HEAD_SIZE + neurons * NEURON_SIZE) / LAYER_SIZE
    assert report["remaining"] == sum(HEAD_SIZE * sum(keep[:HEADS]) + NEURON_SIZE * sum(keep[HEADS:]) for keep in kept)


def test_save_and_load_keep_group_scores_and_masks(tmp_path, batch):
    model = fp.prepare(tiny_model("bert"), structured("movement"))
    fp.get_pruner(model).set_step(10, 10)
    set_random_scores(model)
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    loaded = fp.load_pruned(tmp_path)
    for layer in range(LAYERS):
        for got, want in zip(owner_scores(loaded, layer), owner_scores(model, layer), strict=True):
            assert torch.equal(got, want)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, before)


def test_structure_refuses_what_it_cannot_group():
    with pytest.raises(ValidationError, match="block_shape"):
        structured("magnitude", block_shape=(1, 32))
    with pytest.raises(UsageError, match="layer 0's heads span matrices that are not all pruned"):
        fp.prepare(tiny_model("bert"), structured("magnitude", exclude_modules=[r"query"]))
    with pytest.raises(UsageError, match="classifier belongs to no head or neuron"):
        fp.prepare(tiny_model("bert"), structured("magnitude", target_modules=[r"encoder", r"classifier"]))
    only_ffn = fp.prepare(tiny_model("bert"), structured("magnitude", exclude_modules=[r"attention"]))
    assert [s.kind for s in fp.get_pruner(only_ffn).groups.sets] == ["neurons", "neurons"]
