"""Pseudo-labels for external images, accepted only through three thresholds:

1. a global confidence floor (--pseudo-floor);
2. a per-class threshold chosen on the validation split: the lowest confidence at which the images the model
   assigns to that class are right at least --pseudo-precision of the time (with --pseudo-min-support
   validation images behind the estimate; a class that never gets there accepts nothing);
3. a per-class cap (--pseudo-cap accepted images per training image of the class; auto = the median ratio
   over classes), so the merged data keeps the training distribution instead of flooding the easy classes.

    python main.py pseudo --load-path=checkpoints/<run>/best_model.pth --unlabeled-root=external/
    python main.py train --extra-manifest=checkpoints/<pseudo run>/accepted.csv
    python main.py pseudo --load-path=... --unlabeled-root=... --rounds=2     # train -> predict -> select, twice more

The source folder is only read; everything is written to a new run directory. Images there that are validation or
test images (same path or same SHA-256) are left out and counted.
"""
import dataclasses
import os

import numpy as np

import config
from config import UserError, asked_of
from data import loaders, manifest
from utils.io import inside, sha256, walk_files


def image_paths(root):
    """Every image file under root (any depth, any layout), sorted; none when root is not a folder."""
    return list(walk_files(root))


def held_out(cfg, paths, val_samples):
    """The `paths` that are validation or test images (the validation split, test_data_root, a manifest's test
    rows), by real path or by SHA-256 of the content: labelling them would leak them into training."""
    held = [p for p, _ in val_samples] + image_paths(cfg.test_data_root)
    if cfg.manifest:
        held += [r['path'] for r in manifest.read(cfg.manifest) if r.get('split') == 'test']
    real = {os.path.realpath(p) for p in held}
    digests = {sha256(p) for p in held if os.path.isfile(p)}
    return {p for p in paths if os.path.realpath(p) in real or sha256(p) in digests}


def predict(model, paths, classes, cfg, device, tta='none'):
    """Class probabilities (len(paths) x classes) of the images at `paths`, NaN rows for unreadable files;
    with a TTA name, the views are merged as probabilities (utils/evaluate/tta.py)."""
    from utils.evaluate.loop import EvalModel, probabilities
    return probabilities(EvalModel(model, cfg.image_size, tta, flips=cfg.flips), paths, cfg, device, 'pseudo-label',
                         len(classes))[0]


def class_thresholds(probs, targets, floor, target, min_support):
    """Per class: (threshold, estimated precision, support). The threshold is the lowest confidence >= floor
    at which the validation images predicted as that class with at least that confidence are correct for a
    share >= target, counting at least min_support images; inf (accept nothing) when no confidence gets
    there. Precision is the plain share correct above the threshold."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    pred, conf = probs.argmax(1), probs.max(1)
    out = []
    for c in range(probs.shape[1]):
        mask = (pred == c) & (conf >= floor)
        order = np.argsort(-conf[mask], kind='stable')
        conf_c, right = conf[mask][order], (targets[mask][order] == c)
        count = np.arange(1, len(conf_c) + 1)
        precision = np.cumsum(right) / count
        # A cut can only fall between different confidences: every image tied with the last one is in.
        ends = np.r_[conf_c[1:] < conf_c[:-1], True] if len(conf_c) else np.zeros(0, bool)
        ok = np.flatnonzero(ends & (count >= min_support) & (precision >= target))
        if len(ok):
            k = ok[-1]
            out.append((float(conf_c[k]), float(precision[k]), int(count[k])))
        else:
            out.append((float('inf'), float(precision[-1]) if len(conf_c) else float('nan'), int(len(conf_c))))
    return out


def class_caps(train_counts, candidates, cap_ratio=0.0):
    """Most images to accept per class: cap_ratio (auto: the median candidates / training ratio over the
    classes) times the class's training count, never more than its candidates."""
    train_counts, candidates = np.asarray(train_counts, float), np.asarray(candidates, float)
    if cap_ratio <= 0:
        ratios = candidates / np.maximum(train_counts, 1)
        cap_ratio = float(np.median(ratios[train_counts > 0])) if (train_counts > 0).any() else 0.0
    return np.minimum(candidates, np.floor(cap_ratio * train_counts)).astype(int), cap_ratio


def select(probs, train_counts, thresholds, floor, cap_ratio=0.0):
    """(accepted indices per class, per-class rows): candidates pass the floor and their predicted class's
    threshold; the most confident ones are kept up to the class cap."""
    ok = ~np.isnan(probs).any(1)
    pred = np.where(ok, np.nan_to_num(probs).argmax(1), -1)
    conf = np.where(ok, np.nan_to_num(probs).max(1), 0.0)
    n = probs.shape[1]
    thr = np.array([t for t, _, _ in thresholds])
    passed = [np.flatnonzero((pred == c) & (conf >= floor) & (conf >= thr[c])) for c in range(n)]
    caps, ratio = class_caps(train_counts, [len(p) for p in passed], cap_ratio)
    accepted, rows = [], []
    for c in range(n):
        keep = passed[c][np.argsort(-conf[passed[c]], kind='stable')][:caps[c]]
        accepted.append(keep)
        predicted = int((pred == c).sum())
        rows.append({'class': c, 'train': int(train_counts[c]), 'predicted': predicted,
                     'below_floor': int(((pred == c) & (conf < floor)).sum()),
                     'below_threshold': int(((pred == c) & (conf >= floor) & (conf < thr[c])).sum()),
                     'capped': int(len(passed[c]) - len(keep)), 'accepted': int(len(keep)),
                     'rejected': predicted - int(len(keep)), 'threshold': thresholds[c][0],
                     'est_precision': thresholds[c][1], 'val_support': thresholds[c][2]})
    return accepted, rows, ratio, int((~ok).sum())


def distribution_gap(train_counts, accepted_counts):
    """Total-variation distance between the training and the merged class distributions."""
    t = np.asarray(train_counts, float)
    m = t + np.asarray(accepted_counts, float)
    return float(0.5 * np.abs(t / t.sum() - m / m.sum()).sum())


def check_settings(cfg):
    if not 0 <= cfg.pseudo_floor <= 1 or not 0 < cfg.pseudo_precision <= 1:
        raise UserError('--pseudo-floor must be in [0, 1] and --pseudo-precision in (0, 1]')
    if cfg.pseudo_cap < 0 or cfg.rounds < 0 or cfg.pseudo_min_support < 1:
        raise UserError('--pseudo-cap and --rounds must be >= 0 and --pseudo-min-support >= 1')
    if not cfg.unlabeled_root:
        raise UserError('give the images to label with --unlabeled-root=FOLDER')
    if not os.path.isdir(cfg.unlabeled_root):
        raise UserError(f'--unlabeled-root={cfg.unlabeled_root!r} is not a folder; give the folder of '
                               f'images to label')


def label_once(cfg, run_name):
    """Predict --unlabeled-root with --load-path and accept pseudo-labels into checkpoint_dir/run_name; returns
    (run dir, accepted.csv, report dict). Writes accepted.csv (path,label,confidence), pseudo_report.csv, .json."""
    from utils.evaluate.loop import load_for_eval
    from utils.io import write_json
    from utils.train import engine
    check_settings(cfg)
    given = cfg.given
    model, cfg, ckpt, device = load_for_eval(cfg)
    paths = image_paths(cfg.unlabeled_root)
    if not paths:
        raise UserError(f'{cfg.unlabeled_root} holds no images; give --unlabeled-root=FOLDER with image files')
    if inside(os.path.join(cfg.checkpoint_dir, run_name), cfg.unlabeled_root):
        raise UserError(f'--checkpoint-dir={cfg.checkpoint_dir} is inside --unlabeled-root; pseudo never writes '
                        f'into the source folder: choose a checkpoint dir outside it')
    # Thresholds and the training distribution come from the plain training data of the checkpoint.
    plain = dataclasses.replace(loaders.resolve_roots(cfg, given), extra_manifest='', upsample_hard=0)
    classes = ckpt['classes']
    train_set, val_set = loaders.build_train_val(plain, classes)
    excluded = held_out(plain, paths, val_set.samples)
    if len(excluded) == len(paths):
        raise UserError(f'all {len(paths)} images under --unlabeled-root are validation or test images '
                               f'(same path or content); nothing is left to label')
    found, paths = len(paths), [p for p in paths if p not in excluded]
    train_counts = np.bincount(train_set.targets, minlength=len(classes))
    val_probs = predict(model, [p for p, _ in val_set.samples], classes, cfg, device, cfg.pseudo_tta)
    readable = ~np.isnan(val_probs).any(1)
    thresholds = class_thresholds(val_probs[readable], np.array(val_set.targets)[readable], cfg.pseudo_floor,
                                  cfg.pseudo_precision, cfg.pseudo_min_support)
    probs = predict(model, paths, classes, cfg, device, cfg.pseudo_tta)
    accepted, rows, ratio, unreadable = select(probs, train_counts, thresholds, cfg.pseudo_floor, cfg.pseudo_cap)

    run_dir = engine.make_run_dir(dataclasses.replace(cfg, run_name=run_name))
    out = os.path.join(run_dir, 'accepted.csv')
    manifest.write(out, [{'path': paths[i], 'label': classes[c], 'confidence': f'{probs[i].max():.4f}'}
                         for c, idx in enumerate(accepted) for i in idx], ('path', 'label', 'confidence'))
    for r in rows:
        r['class'] = classes[r['class']]
    counts = [r['accepted'] for r in rows]
    report = {'checkpoint': os.path.abspath(cfg.load_path), 'unlabeled_root': os.path.abspath(cfg.unlabeled_root),
              'images': found, 'excluded': len(excluded), 'unreadable': unreadable, 'accepted': int(sum(counts)),
              'floor': cfg.pseudo_floor, 'precision_target': cfg.pseudo_precision, 'cap_ratio': ratio,
              'tta': cfg.pseudo_tta,
              'distribution_gap': distribution_gap(train_counts, counts), 'classes': rows}
    write_json(report, os.path.join(run_dir, 'pseudo_report.json'))
    from utils.io import write_csv
    fields = ['class', 'train', 'predicted', 'below_floor', 'below_threshold', 'capped', 'accepted', 'rejected',
              'threshold', 'est_precision', 'val_support']
    write_csv(os.path.join(run_dir, 'pseudo_report.csv'), fields, rows)
    print(format_report(report))
    print(f'accepted manifest {out}; train with --extra-manifest={out}')
    return run_dir, out, report


def format_report(report):
    width = max(5, max(len(r['class']) for r in report['classes']))
    lines = [f'{"class":<{width}} {"train":>6} {"pred":>6} {"<floor":>6} {"<thr":>6} {"capped":>6} {"accept":>6} '
             f'{"thresh":>7} {"est.prec":>8} {"val n":>5}']
    for r in report['classes']:
        thr = 'never' if r['threshold'] == float('inf') else f'{r["threshold"]:.4f}'
        prec = '-' if np.isnan(r['est_precision']) else f'{r["est_precision"]:.3f}'
        lines.append(f'{r["class"]:<{width}} {r["train"]:>6} {r["predicted"]:>6} {r["below_floor"]:>6} '
                     f'{r["below_threshold"]:>6} {r["capped"]:>6} {r["accepted"]:>6} {thr:>7} {prec:>8} '
                     f'{r["val_support"]:>5}')
    lines.append(f'{report["accepted"]} of {report["images"]} images accepted ({report["unreadable"]} unreadable, '
                 f'{report["excluded"]} excluded as validation / test images); '
                 f'floor {report["floor"]}, precision target {report["precision_target"]}, cap '
                 f'{report["cap_ratio"]:.3f} x training count, distribution gap (total variation) '
                 f'{report["distribution_gap"]:.4f}')
    return '\n'.join(lines)


def run(cfg):
    """label_once, then --rounds times: train from the previous best with the accepted images added, and label
    again with the new best. Returns the list of (run dir, accepted.csv, report) per selection."""
    import time
    from utils.io import load_checkpoint
    from utils.train import engine
    check_settings(cfg)
    if not cfg.load_path:
        raise UserError('give the model that labels the images with --load-path=checkpoints/<run>/best_model.pth')
    name = cfg.run_name if 'run_name' in getattr(cfg, 'given', ()) else f'pseudo-{time.strftime("%Y%m%d-%H%M%S")}'
    results = [label_once(cfg, f'{name}-round0' if cfg.rounds else name)]
    for r in range(1, cfg.rounds + 1):
        # the recipe the model was trained with, this command's settings on top; it starts from the previous best,
        # which already holds what --pretrained gave
        values = {**asked_of(load_checkpoint(cfg.load_path)), **cfg.asked(), 'extra_manifest': results[-1][1],
                  'pretrained_path': cfg.load_path, 'pretrained': 'none', 'run_name': f'{name}-train{r}'}
        print(f'round {r}/{cfg.rounds}: training from {cfg.load_path} with {results[-1][2]["accepted"]} '
              f'pseudo-labelled images')
        run_dir = engine.fit(config.parse(**values))
        cfg = dataclasses.replace(cfg, load_path=os.path.join(run_dir, 'best_model.pth'))
        results.append(label_once(cfg, f'{name}-round{r}'))
    if cfg.rounds:
        print(f'last model {cfg.load_path}; last accepted manifest {results[-1][1]}')
    return results

