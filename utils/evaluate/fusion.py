"""Fusing several models: soft vote, hard vote and stacking of their class probabilities, and the `ensemble`
command -- several checkpoints (any architecture and input size) fused side by side with each member."""
import dataclasses
import os

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from config import UserError
from data import loaders
from data.dataset import ImageFolderDataset
from utils.evaluate.loop import load_for_eval
from utils.evaluate.loop import check_settings, probabilities, wrap, write_predictions
from utils.evaluate.metrics import classification_summary


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


def parse_weights(values, n):
    """--ensemble-weights=[2,1,1] -> [2.0, 1.0, 1.0]; empty -> None (equal weights)."""
    if not values:
        return None
    try:
        weights = [float(v) for v in values]
    except ValueError:
        raise UserError(f'--ensemble-weights must be numbers, e.g. [2,1,1]; got {values}') from None
    if len(weights) != n:
        raise UserError(f'--ensemble-weights has {len(weights)} values for {n} members; give one per checkpoint')
    return weights


def member_probabilities(cfg, path):
    """A member's class probabilities on the evaluation folder and on its validation split, each through its
    own eval transform and image size (and --tta when given)."""
    asked = dataclasses.replace(cfg, load_path=path, given=cfg.given | {'load_path'})
    model, mcfg, ckpt, device = load_for_eval(asked)
    mcfg = loaders.resolve_roots(mcfg, asked.given)
    model = wrap(model, mcfg)
    classes = ckpt['classes']
    root = mcfg.data_root or mcfg.test_data_root
    test = ImageFolderDataset.from_folder(root, classes).samples
    _, _, val = loaders.train_val_samples(mcfg, classes)
    run = os.path.basename(os.path.dirname(os.path.abspath(path)))
    name = f'{ckpt["model_name"]} {mcfg.image_size}px ({run})'
    out = {'path': path, 'name': name, 'classes': classes, 'image_size': mcfg.image_size, 'root': root}
    for split, samples in (('test', test), ('val', val)):
        paths = [p for p, _ in samples]
        probs, _ = probabilities(model, paths, mcfg, device, desc=f'{name} {split}')
        out[split] = {'paths': paths, 'labels': np.array([y for _, y in samples]), 'probs': probs}
    return out


def _scores(y, pred, classes):
    s = classification_summary(y, pred, class_names=classes)
    return s['top1'], s['macro']['f1']


def ensemble(cfg):
    """Evaluate every member and each fusion method on the test folder; stacking is fitted on the validation
    split only (cross-validated there), never on the test images. Returns the table as a list of dicts."""
    paths = list(cfg.load_paths)
    if len(paths) < 2:
        raise UserError('give two or more checkpoints with --load-paths=[a.pth,b.pth,...]')
    weights = parse_weights(cfg.ensemble_weights, len(paths))
    check_settings(cfg)
    members = [member_probabilities(cfg, p) for p in paths]
    first = members[0]
    for m in members[1:]:
        if m['classes'] != first['classes']:
            raise UserError(f'{m["path"]} was trained on other classes than {first["path"]}; '
                            f'an ensemble needs the same class list')
        if m['test']['paths'] != first['test']['paths']:
            raise UserError(f'{m["path"]} and {first["path"]} evaluate different image folders; '
                            f'give the same --data-root to all')
    classes = first['classes']

    rows = []
    # an image unreadable for one member is left out for all, so every method sees the same images
    same_val = all(m['val']['paths'] == first['val']['paths'] for m in members)
    split_data = {}
    for split in ('test', 'val') if same_val else ('test',):
        ok = ~np.any([np.isnan(m[split]['probs']).any(axis=1) for m in members], axis=0)
        split_data[split] = ([m[split]['probs'][ok] for m in members], first[split]['labels'][ok])
    test_probs, y_test = split_data['test']
    val_probs, y_val = split_data.get('val', ([np.zeros((0, len(classes)))] * len(members), np.zeros(0, int)))
    if not len(y_test):
        raise UserError('no image of the evaluation folder could be read by every member')

    for m, p_test, p_val in zip(members, test_probs, val_probs):
        acc, f1 = _scores(y_test, p_test.argmax(1), classes)
        val_acc = float((p_val.argmax(1) == y_val).mean()) if same_val and len(y_val) else None
        rows.append({'method': f'member {m["name"]}', 'path': m['path'], 'val_top1': val_acc,
                     'test_top1': acc, 'test_macro_f1': f1})
    soft = soft_vote(test_probs, weights)
    fused = {'soft': (soft, soft.argmax(1))}
    label = 'soft vote' + (f' (weights {", ".join(f"{w:g}" for w in weights)})' if weights else '')
    rows.append({'method': label, 'val_top1': float((soft_vote(val_probs, weights).argmax(1) == y_val).mean())
                 if same_val and len(y_val) else None, **dict(zip(('test_top1', 'test_macro_f1'),
                                                               _scores(y_test, soft.argmax(1), classes)))})
    hard = hard_vote(test_probs)
    share = np.mean([np.eye(len(classes))[p.argmax(1)] for p in test_probs], axis=0)  # vote share per class
    fused['hard'] = (share, hard)
    rows.append({'method': 'hard vote', 'val_top1': float((hard_vote(val_probs) == y_val).mean())
                 if same_val and len(y_val) else None,
                 **dict(zip(('test_top1', 'test_macro_f1'), _scores(y_test, hard, classes)))})

    folds = int(np.bincount(y_val, minlength=len(classes)).min()) if len(y_val) else 0
    folds = min(5, folds)
    if not same_val:
        note = 'members were validated on different splits (another --kfold / --fold or data root)'
    elif folds < 2:
        note = 'every class needs two or more validation images'
    else:
        note = ''
    if note:
        print(f'stacking skipped: {note}')
    else:
        meta, cv_acc = fit_stacking(val_probs, y_val, folds=folds, seed=cfg.seed)
        stacked = stack_predict(meta, test_probs)
        fused['stacking'] = (stacked, stacked.argmax(1))
        rows.append({'method': f'stacking (logistic regression, {folds}-fold CV on val)', 'val_top1': cv_acc,
                     **dict(zip(('test_top1', 'test_macro_f1'), _scores(y_test, stacked.argmax(1), classes)))})
    print_table(rows, len(y_test), len(y_val) if same_val else 0)

    if cfg.output:
        if cfg.fusion not in fused:
            raise UserError(f'--fusion={cfg.fusion} is not available here ({note}); use soft or hard')
        probs, preds = fused[cfg.fusion]
        ok = ~np.any([np.isnan(m['test']['probs']).any(axis=1) for m in members], axis=0)
        full = np.full((len(ok), len(classes)), np.nan)
        full[ok] = probs
        full_preds = np.zeros(len(ok), dtype=int)
        full_preds[ok] = preds
        names = [os.path.relpath(p, first['root']) for p in first['test']['paths']]
        write_predictions(cfg.output, names, full, classes, min(cfg.topk, len(classes)), preds=full_preds)
        print(f'{cfg.fusion} predictions for {len(names)} image(s) written to {cfg.output}')
    return rows


def print_table(rows, n_test, n_val):
    width = max(len(r['method']) for r in rows)
    pct = lambda v: '-' if v is None else f'{100 * v:.2f}%'
    print(f'\n{"method":<{width}}  {"val top-1":>9}  {"test top-1":>10}  {"test macro-F1":>13}')
    for r in rows:
        print(f'{r["method"]:<{width}}  {pct(r["val_top1"]):>9}  {pct(r["test_top1"]):>10}  '
              f'{pct(r["test_macro_f1"]):>13}')
    print(f'({n_test} test images, {n_val} validation images; stacking is fitted on the validation split only)')
