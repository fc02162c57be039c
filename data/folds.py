"""Stratified k-fold splits for cross-validated training."""
import numpy as np
from sklearn.model_selection import StratifiedKFold

from config import UserError


def kfold_indices(labels, k, fold, seed=0):
    """Return (train_idx, val_idx) of fold `fold` of a stratified, shuffled k-fold split.

    The same (labels, k, seed) always gives the same split, so fold 0..k-1 run in separate
    processes partition the data: every sample is in exactly one val part.
    """
    labels = np.asarray(labels)
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise UserError(f"kfold must be an integer >= 2, got {k!r}")
    if not isinstance(fold, (int, np.integer)) or not 0 <= fold < k:
        raise UserError(f"fold must be in [0, {k}) for kfold={k}, got {fold!r}")
    classes, counts = np.unique(labels, return_counts=True)
    small = counts < k
    if small.any():
        c, n = classes[small][0].item(), int(counts[small][0])
        raise UserError(f"class {c!r} has only {n} samples, fewer than kfold={k}: "
                        f"lower kfold or add samples to that class")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    train_idx, val_idx = list(splitter.split(np.zeros(len(labels)), labels))[fold]
    return train_idx, val_idx
