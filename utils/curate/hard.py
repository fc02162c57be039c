"""Hard examples: the images a checkpoint gets wrong, grouped by the confusion-matrix cell they fall in.

    python main.py hard --load-path=checkpoints/<run>/best_model.pth
    python main.py train --upsample-hard=2 --hard-list=checkpoints/<run>/hard_train.csv
"""
import dataclasses
import os

import numpy as np

from data import loaders, manifest
from utils.evaluate.metrics import confusion
from utils.evaluate.loop import probabilities

FIELDS = ('path', 'label', 'predicted', 'confidence')


def misclassified(paths, targets, probs, classes):
    """Rows (path, label, predicted, confidence) of the wrong predictions, most confident first."""
    ok = ~np.isnan(probs).any(1)
    pred = np.nan_to_num(probs).argmax(1)
    wrong = np.flatnonzero(ok & (pred != np.asarray(targets)))
    wrong = wrong[np.argsort(-probs[wrong].max(1), kind='stable')]
    return [{'path': paths[i], 'label': classes[targets[i]], 'predicted': classes[pred[i]],
             'confidence': f'{probs[i].max():.4f}'} for i in wrong]


def format_by_cell(rows, cm, classes, examples=3):
    """The off-diagonal confusion cells, largest first, each with a few of its images."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    lines = []
    for flat in np.argsort(-off, axis=None, kind='stable'):
        t, p = np.unravel_index(flat, cm.shape)
        if off[t, p] == 0:
            break
        cell = [r['path'] for r in rows if r['label'] == classes[t] and r['predicted'] == classes[p]]
        lines.append(f'  true {classes[t]} -> predicted {classes[p]}: {off[t, p]}  '
                     + ', '.join(cell[:examples]) + (' ...' if len(cell) > examples else ''))
    return '\n'.join(lines)


def find(cfg):
    """Write hard_val.csv and hard_train.csv (manifests with the predicted class and confidence) beside
    --load-path; returns their paths."""
    from utils.evaluate.loop import load_for_eval
    given = cfg.given
    model, cfg, ckpt, device = load_for_eval(cfg)
    plain = dataclasses.replace(loaders.resolve_roots(cfg, given), upsample_hard=0)
    classes = ckpt['classes']
    train_set, val_set = loaders.build_train_val(plain, classes)
    out_dir = os.path.dirname(os.path.abspath(cfg.load_path))
    written = {}
    for split, data in (('val', val_set), ('train', train_set)):
        paths = [p for p, _ in data.samples]
        probs, _ = probabilities(model, paths, cfg, device, f'hard {split}', len(classes))
        rows = misclassified(paths, data.targets, probs, classes)
        path = manifest.write(os.path.join(out_dir, f'hard_{split}.csv'), rows, FIELDS)
        written[split] = path
        ok = ~np.isnan(probs).any(1)
        cm = confusion(np.asarray(data.targets)[ok], probs[ok].argmax(1), len(classes))
        print(f'{split}: {len(rows)} of {int(ok.sum())} images misclassified -> {path}')
        if split == 'val' and rows:
            print(format_by_cell(rows, cm, classes))
    print(f'train with --upsample-hard=2 --hard-list={written["train"]} to see the hard training images more often')
    return written
