"""Combine the class probabilities of several models: soft vote, hard vote, stacking."""
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from config import UserError


def _stack(prob_list):
    probs = np.stack([np.asarray(p, dtype=np.float64) for p in prob_list])
    if probs.ndim != 3:
        raise ValueError("prob_list must hold one (n_samples, n_classes) array per model, all the same shape")
    return probs


def soft_vote(prob_list, weights=None):
    """Weighted mean of the members' probabilities, (n_samples, n_classes); weights default to equal."""
    probs = _stack(prob_list)
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(probs),) or (w < 0).any() or w.sum() <= 0:
        raise UserError(f"ensemble_weights must be {len(probs)} non-negative numbers with a positive sum, got {weights!r}")
    return np.tensordot(w / w.sum(), probs, axes=1)


def hard_vote(prob_list):
    """Majority vote of the members' top-1 labels, (n_samples,).

    A tie between classes with the same number of votes goes to the tied class with the
    largest summed probability over all members.
    """
    probs = _stack(prob_list)
    n_classes = probs.shape[2]
    votes = np.stack([np.bincount(row, minlength=n_classes) for row in probs.argmax(axis=2).T])
    tied = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied, probs.sum(axis=0), -np.inf).argmax(axis=1)


def _features(member_probs):
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in member_probs], axis=1)


def fit_stacking(member_probs_val, y_val, folds=5, seed=0):
    """Fit a logistic-regression meta-learner on the members' concatenated validation probabilities.

    Returns (meta, cv_acc): meta is fitted on all of the validation set; cv_acc is the accuracy of
    out-of-fold predictions (cross_val_predict), an estimate that never uses test labels.
    """
    X, y = _features(member_probs_val), np.asarray(y_val)
    meta = LogisticRegression(max_iter=1000)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    cv_acc = float((cross_val_predict(meta, X, y, cv=cv) == y).mean())
    return meta.fit(X, y), cv_acc


def stack_predict(meta, member_probs):
    """Class probabilities of the fitted meta-learner for the members' probabilities."""
    return meta.predict_proba(_features(member_probs))
