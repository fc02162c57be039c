"""Classification losses, class weights and the loss registry (``cfg.loss`` names a key of LOSSES)."""
import torch
import torch.nn.functional as F
from torch import nn

import config


class LabelSmoothSoftmaxCE(nn.Module):
    """Cross-entropy against a smoothed target: ``lb_pos`` on the true class, ``lb_neg`` elsewhere.

    ``lb_neg='auto'`` is ``(1 - lb_pos) / (C - 1)`` for C classes: the target is then a distribution, whose
    optimum gives the true class ``lb_pos`` whatever C is. A fixed ``lb_neg`` makes the target sum to
    ``lb_pos + lb_neg * (C - 1)``, so the same number smooths more as classes are added.

    Samples labelled ``ignore_index`` are left out, also of the mean's denominator. An optional
    per-class ``weight`` scales each sample by ``weight[label]`` and the mean then divides by the
    sum of those weights, as ``nn.CrossEntropyLoss`` does. ``reduction`` is mean, sum or none
    ('none' returns the per-sample loss with 0 for ignored samples).
    """

    def __init__(self, lb_pos=0.9, lb_neg='auto', reduction='mean', ignore_index=255, weight=None):
        super().__init__()
        if reduction not in ('mean', 'sum', 'none'):
            raise ValueError(f"reduction must be one of mean, sum, none; got {reduction!r}")
        self.lb_pos, self.lb_neg = lb_pos, lb_neg if lb_neg == 'auto' else float(lb_neg)
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.register_buffer('weight', None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits, labels):
        """Loss of ``logits`` (N, C, ...) against integer ``labels`` (N, ...)."""
        valid = labels != self.ignore_index
        # Ignored labels may be out of range (255 > C): point them at class 0, then drop them.
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        neg = (1 - self.lb_pos) / max(1, logits.shape[1] - 1) if self.lb_neg == 'auto' else self.lb_neg
        target = torch.full_like(logits, neg).scatter_(1, safe.unsqueeze(1), self.lb_pos)
        loss = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
        scale = valid.to(loss.dtype)
        if self.weight is not None:
            scale = scale * self.weight.to(loss.dtype)[safe]
        loss = loss * scale
        if self.reduction == 'none':
            return loss
        if self.reduction == 'sum':
            return loss.sum()
        # Clamp so a batch with nothing to learn from gives 0, not NaN.
        return loss.sum() / scale.sum().clamp(min=torch.finfo(loss.dtype).tiny)


class JointLoss(nn.Module):
    """Weighted sum of two losses on the same output and target."""

    def __init__(self, first, second, first_weight=0.5, second_weight=0.5):
        super().__init__()
        self.first, self.second = first, second
        self.first_weight, self.second_weight = first_weight, second_weight

    def forward(self, output, target):
        """``first_weight * first(output, target) + second_weight * second(output, target)``."""
        return (self.first_weight * self.first(output, target)
                + self.second_weight * self.second(output, target))


def class_weights(counts, kind, beta=0.999):
    """Per-class loss weights from per-class sample ``counts``, averaging 1; None for 'none'.

    Kinds: inverse (1/n), sqrt_inverse (1/sqrt(n)), effective_number ((1-beta)/(1-beta**n),
    Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples").
    """
    kind = config.check_choice('class_weight', kind, config.choices()['class_weight'])
    if kind == 'none':
        return None
    n = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if n.numel() == 0 or (n <= 0).any():
        empty = torch.nonzero(n <= 0).flatten().tolist()
        raise config.UserError(f"class weights need a positive sample count for every class; "
                               f"classes {empty} have none (got {n.numel()} counts)")
    if kind == 'inverse':
        w = 1 / n
    elif kind == 'sqrt_inverse':
        w = 1 / n.sqrt()
    else:
        if not 0 < beta < 1:
            raise config.UserError(f"effective_number needs 0 < beta < 1, got {beta}")
        w = (1 - beta) / (1 - beta ** n)
    return (w * n.numel() / w.sum()).float()


def _ce(cfg, weight=None):
    return nn.CrossEntropyLoss(weight=weight)


def _label_smooth(cfg, weight=None):
    return LabelSmoothSoftmaxCE(lb_pos=cfg.lb_pos, lb_neg=cfg.lb_neg, weight=weight)


def _joint(cfg, weight=None):
    weights = cfg.joint_weights
    if len(weights) != 2:
        raise config.UserError(f"joint_weights must be two numbers (ce, label_smooth), got {weights!r}")
    first_weight, second_weight = (float(w) for w in weights)  # from the command line they come as text
    return JointLoss(_ce(cfg, weight), _label_smooth(cfg, weight), first_weight, second_weight)


# name -> builder(cfg, weight=None) -> nn.Module
LOSSES = {'ce': _ce, 'label_smooth': _label_smooth, 'joint': _joint}


def build_loss(cfg, weight=None):
    """Build the loss named by ``cfg.loss`` (case-insensitive), with optional class ``weight``."""
    return LOSSES[cfg.loss](cfg, weight=weight)
