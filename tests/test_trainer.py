"""PruningTrainer details that the Trainer gets wrong for pruning: evaluation order, gradient clipping."""

import math

import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

import fineprune as fp
from fineprune.training.trainer import SCORES_SUFFIX, PruningTrainer


def tiny_classifier() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(
        BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )


def test_group_by_length_leaves_evaluation_in_dataset_order(tmp_path):
    # Lengths in a non-monotone order: a length-grouped sampler would visit them in another order.
    lengths = [3, 17, 5, 30, 2, 11, 24, 8, 19, 4, 27, 6]
    data = Dataset.from_dict({"input_ids": [[1] * n for n in lengths], "labels": [0] * len(lengths)})
    model = tiny_classifier()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        train_sampling_strategy="group_by_length",
        per_device_eval_batch_size=2,
        report_to=[],
        use_cpu=True,
    )
    trainer = PruningTrainer(model=model, args=args, train_dataset=data)

    order = list(iter(trainer._get_eval_sampler(data)))
    train_order = list(iter(trainer._get_train_sampler(data)))

    assert order == list(range(len(lengths)))
    assert sorted(train_order) == order and train_order != order  # the training side still groups by length


def test_clipping_leaves_weights_alone_when_the_scores_gradient_is_huge(tmp_path):
    """A steered lambda makes the scores' gradient norm huge; it must not scale down the weights' update."""
    model = fp.prepare(tiny_classifier(), fp.PruningConfig(method="soft_movement", final_threshold=0.1))
    args = TrainingArguments(output_dir=str(tmp_path), max_grad_norm=1.0, report_to=[], use_cpu=True)
    trainer = PruningTrainer(model=model, args=args)
    weights, scores = [], []
    for name, p in model.named_parameters():
        p.grad = torch.full_like(p, 1e4 if name.endswith(SCORES_SUFFIX) else 1e-3)
        (scores if name.endswith(SCORES_SUFFIX) else weights).append(p)
    weight_norm = 1e-3 * math.sqrt(sum(p.numel() for p in weights))  # below max_grad_norm: no clipping due

    norm = trainer._clip_grad_norm(model)

    assert scores and math.isclose(float(norm), weight_norm, rel_tol=1e-5)
    assert all(torch.all(p.grad == 1e-3) for p in weights)
    assert all(torch.all(p.grad == 1e4) for p in scores)
