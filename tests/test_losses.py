"""Label-smoothing CE, joint loss, class weights and the loss registry against hand-computed values."""
import math

import pytest
import torch
from torch import nn

import config
from utils.train.losses import LOSSES, JointLoss, LabelSmoothSoftmaxCE, build_loss, class_weights

LOGITS = torch.tensor([[2.0, 0.5, -1.0],
                       [0.0, 1.0, 3.0],
                       [1.0, 1.0, 1.0],
                       [-2.0, 0.0, 2.0]])
LABELS = torch.tensor([0, 2, 255, 1])


def _by_hand(row, label, pos=0.9, neg=0.1 / 2):
    """-sum(target * log_softmax) for one row, written out with math.log/exp (neg: lb_neg=auto at 3 classes)."""
    log_z = math.log(sum(math.exp(v) for v in row))
    return -sum((pos if c == label else neg) * (v - log_z) for c, v in enumerate(row))


def _hand_losses():
    return [0.0 if int(y) == 255 else _by_hand(LOGITS[i].tolist(), int(y)) for i, y in enumerate(LABELS)]


def test_label_smoothing_matches_manual_formula_and_skips_ignored_in_mean():
    hand = _hand_losses()
    loss = LabelSmoothSoftmaxCE()(LOGITS, LABELS)
    assert loss.item() == pytest.approx(sum(hand) / 3, rel=1e-6)


def test_label_smoothing_sum_and_none_reductions():
    hand = _hand_losses()
    assert LabelSmoothSoftmaxCE(reduction='sum')(LOGITS, LABELS).item() == pytest.approx(sum(hand), rel=1e-6)
    per_sample = LabelSmoothSoftmaxCE(reduction='none')(LOGITS, LABELS)
    assert per_sample.tolist() == pytest.approx(hand, rel=1e-6)
    assert per_sample[2].item() == 0.0


def test_label_smoothing_class_weights_scale_samples_and_mean_divides_by_weight_sum():
    weight = torch.tensor([2.0, 0.5, 1.0])
    hand = _hand_losses()
    w = [2.0, 1.0, 0.0, 0.5]
    loss = LabelSmoothSoftmaxCE(weight=weight)(LOGITS, LABELS)
    assert loss.item() == pytest.approx(sum(h * wi for h, wi in zip(hand, w)) / sum(w), rel=1e-6)
    none = LabelSmoothSoftmaxCE(weight=weight, reduction='none')(LOGITS, LABELS)
    assert none.tolist() == pytest.approx([h * wi for h, wi in zip(hand, w)], rel=1e-6)


def test_one_hot_label_smoothing_equals_torch_cross_entropy():
    weight = torch.tensor([2.0, 0.5, 1.0])
    ours = LabelSmoothSoftmaxCE(lb_pos=1.0, lb_neg=0.0, weight=weight)(LOGITS, LABELS)
    ref = nn.CrossEntropyLoss(weight=weight, ignore_index=255)(LOGITS, LABELS)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_all_ignored_batch_gives_zero_not_nan():
    loss = LabelSmoothSoftmaxCE()(LOGITS[:1], torch.tensor([255]))
    assert loss.item() == 0.0


def test_joint_loss_is_weighted_sum_of_both():
    labels = torch.tensor([0, 2, 1, 1])
    ce = nn.functional.cross_entropy(LOGITS, labels).item()
    ls = sum(_by_hand(LOGITS[i].tolist(), int(y)) for i, y in enumerate(labels)) / 4
    joint = JointLoss(nn.CrossEntropyLoss(), LabelSmoothSoftmaxCE(), 0.3, 0.7)(LOGITS, labels)
    assert joint.item() == pytest.approx(0.3 * ce + 0.7 * ls, rel=1e-6)


def test_class_weights_match_hand_values_and_average_one():
    counts = [1, 4, 16]
    assert class_weights(counts, 'none') is None
    inverse = [1, 0.25, 0.0625]
    assert class_weights(counts, 'inverse').tolist() == pytest.approx([3 * v / sum(inverse) for v in inverse])
    sqrt_inv = [1, 0.5, 0.25]
    assert class_weights(counts, 'sqrt_inverse').tolist() == pytest.approx([3 * v / 1.75 for v in sqrt_inv])
    beta = 0.9
    eff = [(1 - beta) / (1 - beta ** n) for n in counts]
    got = class_weights(counts, 'effective_number', beta=beta)
    assert got.tolist() == pytest.approx([3 * v / sum(eff) for v in eff])
    assert got.mean().item() == pytest.approx(1.0) and got.dtype == torch.float32


def test_class_weights_reject_unknown_kind_and_empty_class():
    with pytest.raises(ValueError, match='inverse'):
        class_weights([1, 2], 'balanced')
    with pytest.raises(ValueError, match=r'classes \[1\]'):
        class_weights([3, 0, 2], 'inverse')


def test_build_loss_reads_config_and_is_case_insensitive():
    weight = torch.tensor([1.0, 2.0, 3.0])
    assert isinstance(build_loss(config.DefaultConfig()), LabelSmoothSoftmaxCE)  # config.py's default
    ce = build_loss(config.parse(loss='CE'), weight=weight)
    assert isinstance(ce, nn.CrossEntropyLoss) and torch.equal(ce.weight, weight)
    ls = build_loss(config.parse(loss='Label_Smooth', lb_pos=0.8, lb_neg=0.1), weight=weight)
    assert (ls.lb_pos, ls.lb_neg) == (0.8, 0.1) and torch.equal(ls.weight, weight)
    joint = build_loss(config.parse(loss='joint', joint_weights='0.2,0.8'))
    assert (joint.first_weight, joint.second_weight) == (0.2, 0.8)
    assert isinstance(joint.first, nn.CrossEntropyLoss) and isinstance(joint.second, LabelSmoothSoftmaxCE)
    assert set(LOSSES) == {'ce', 'label_smooth', 'joint'}


@pytest.mark.parametrize('classes', [3, 62, 200])
def test_default_label_smoothing_is_a_distribution_with_lb_pos_on_the_true_class_at_any_class_count(classes):
    torch.manual_seed(classes)
    logits, labels = torch.randn(5, classes), torch.randint(0, classes, (5,))
    neg = (1 - 0.9) / (classes - 1)  # lb_neg=auto: the other classes share what the true class leaves
    hand = [_by_hand(logits[i].tolist(), int(y), 0.9, neg) for i, y in enumerate(labels)]
    for cfg in (config.parse(), config.parse(lb_neg='auto')):
        assert build_loss(cfg)(logits, labels).item() == pytest.approx(sum(hand) / 5, rel=1e-6)
    # the loss is lowest where the softmax equals the target: p(true class) = lb_pos = 0.9 at every C
    optimum = torch.full((1, classes), math.log(neg))
    optimum[0, 0] = math.log(0.9)
    optimum.requires_grad_(True)
    build_loss(config.parse())(optimum, torch.tensor([0])).backward()
    assert optimum.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize('classes', [3, 62, 200])
def test_an_explicit_lb_neg_keeps_the_write_ups_fixed_target(classes):
    torch.manual_seed(classes)
    logits, labels = torch.randn(5, classes), torch.randint(0, classes, (5,))
    hand = [_by_hand(logits[i].tolist(), int(y), 0.9, 0.005) for i, y in enumerate(labels)]
    loss = build_loss(config.parse(lb_neg='0.005'))(logits, labels)  # as --lb-neg=0.005 arrives
    assert loss.item() == pytest.approx(sum(hand) / 5, rel=1e-6)


@pytest.mark.parametrize('value, message', [('0.5x', r"--lb-neg='0.5x' is not a valid float or auto"),
                                            ('none', r"--lb-neg='none' is not a valid float or auto"),
                                            ('1', r'--lb-neg must be auto or a probability in \[0, 1\)'),
                                            ('-0.1', r'--lb-neg must be auto or a probability in \[0, 1\)'),
                                            ('nan', r'--lb-neg must be auto or a probability in \[0, 1\)')])
def test_lb_neg_other_than_auto_or_a_probability_is_refused_in_one_line(value, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse(lb_neg=value)


def test_build_loss_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match='ce, label_smooth, joint'):
        build_loss(config.parse(loss='focal'))
