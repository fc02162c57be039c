"""Accuracy, top-k, confusion matrix and per-class tables (numpy; no heavy imports)."""
import csv
import os

import numpy as np


def topk_accuracy(probs, targets, k):
    """Share of rows whose true class is among the k highest scores."""
    topk = np.argsort(-probs, axis=1)[:, :k]
    return float((topk == np.asarray(targets)[:, None]).any(axis=1).mean()) if len(targets) else 0.0


def confusion_matrix(targets, preds, num_classes):
    """cm[true, predicted] counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm):
    """Recall of each class (nan for a class with no samples)."""
    support = cm.sum(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def format_per_class(cm, classes):
    """A fixed-width table: class, support, correct, accuracy."""
    acc = per_class_accuracy(cm)
    width = max(5, max(len(c) for c in classes))
    lines = [f'{"class":<{width}}  {"support":>7}  {"correct":>7}  {"acc":>7}']
    for i, name in enumerate(classes):
        shown = 'n/a' if np.isnan(acc[i]) else f'{100 * acc[i]:.2f}%'
        lines.append(f'{name:<{width}}  {cm[i].sum():>7d}  {cm[i, i]:>7d}  {shown:>7}')
    return '\n'.join(lines)


def write_confusion_csv(cm, classes, path):
    """Rows = true class, columns = predicted class, with the class names as header and first column."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['true\\predicted'] + list(classes))
        for name, row in zip(classes, cm):
            w.writerow([name] + [int(v) for v in row])
