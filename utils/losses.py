"""The loss registry. Each builder takes (cfg, weight) and returns an nn.Module."""
from torch import nn


def cross_entropy(cfg, weight=None):
    return nn.CrossEntropyLoss(weight=weight)


LOSSES = {'ce': cross_entropy}


def build_loss(cfg, weight=None):
    name = cfg.loss.lower()
    if name not in LOSSES:
        raise ValueError(f'unknown --loss={cfg.loss!r}; choose one of: {", ".join(LOSSES)}')
    return LOSSES[name](cfg, weight)
