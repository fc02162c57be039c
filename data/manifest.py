"""CSV manifests as a dataset source beside class folders.

A manifest has a header with at least `path,label` (and optionally `split` = train | val | test, plus any
other columns, e.g. `confidence`); paths are relative to the manifest's own folder (absolute paths work too),
labels are class names.

    python main.py split --val-ratio=0.15                       # writes a stratified, seeded split.csv
    python main.py train --manifest=data/split.csv --extra-manifest=checkpoints/<pseudo run>/accepted.csv
"""
import csv
import os

from config import UserError
from utils.io import atomic
from .dataset import find_classes, scan, stratified_split

SPLITS = ('train', 'val', 'test')


def read(path, allow_empty=False):
    """Rows of a manifest as dicts; 'path' is resolved against the manifest's folder."""
    if not os.path.isfile(path):
        raise UserError(f'manifest {path} does not exist; write one with `python main.py split` '
                        f'(CSV with a path,label[,split] header)')
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        missing = {'path', 'label'} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f'manifest {path} has no {"/".join(sorted(missing))} column; its header must start '
                            f'with path,label[,split]')
        rows = []
        for n, row in enumerate(reader, start=2):
            if not row['path'] or not row['label']:
                raise UserError(f'{path} line {n}: empty path or label')
            split = (row.get('split') or '').strip()
            if split and split not in SPLITS:
                raise UserError(f'{path} line {n}: split {split!r} is not one of {", ".join(SPLITS)}')
            row['path'] = os.path.normpath(os.path.join(folder, row['path']))
            rows.append(row)
    if not rows and not allow_empty:
        raise UserError(f'manifest {path} lists no images')
    return rows


def write(path, rows, fields=('path', 'label')):
    """Write rows (dicts with at least the `fields`) with paths relative to the manifest's folder; the file
    appears whole or not at all."""
    folder = os.path.dirname(os.path.abspath(path))
    with atomic(path, newline='') as f:
        w = csv.DictWriter(f, list(fields), extrasaction='ignore')
        w.writeheader()
        for row in rows:
            w.writerow(dict(row, path=os.path.relpath(os.path.abspath(row['path']), folder)))
    return path


def samples(rows, classes, source):
    """(path, label index) pairs of manifest rows; a label outside `classes` is refused."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({r['label'] for r in rows} - set(index))
    if unknown:
        raise UserError(f'{source} has labels that are not training classes: {unknown[:10]}')
    return [(r['path'], index[r['label']]) for r in rows]


def split_rows(cfg):
    """Rows of a stratified, seeded train/val split of train_data_root (files stay where they are)."""
    classes = find_classes(cfg.train_data_root)
    found = scan(cfg.train_data_root, classes)
    train_idx, val_idx = stratified_split([label for _, label in found], cfg.val_ratio, cfg.seed)
    split = {i: 'train' for i in train_idx}
    split.update({i: 'val' for i in val_idx})
    return [{'path': p, 'label': classes[label], 'split': split[i]} for i, (p, label) in enumerate(found)]


def default_split_path(cfg):
    return cfg.manifest_out or os.path.join(os.path.dirname(os.path.normpath(cfg.train_data_root)), 'split.csv')


def train_val_rows(cfg):
    """(classes, training samples, validation samples) of --manifest: classes are the sorted labels, training
    its rows with an empty or `train` split, validation its `val` rows (loaders.train_val_samples splits)."""
    rows = read(cfg.manifest)
    classes = sorted({r['label'] for r in rows})
    train = samples([r for r in rows if r.get('split', '') in ('', None, 'train')], classes, cfg.manifest)
    if not train:
        raise UserError(f'{cfg.manifest} has no training rows (split empty or "train")')
    return classes, train, samples([r for r in rows if r.get('split') == 'val'], classes, cfg.manifest)


def add_extra(cfg, classes, train):
    """The training samples plus the rows of --extra-manifest (comma-separated paths); a row whose image is
    already a training sample is not added twice."""
    if not cfg.extra_manifest:
        return train
    have = {os.path.abspath(p) for p, _ in train}
    out = list(train)
    for path in [p.strip() for p in cfg.extra_manifest.split(',') if p.strip()]:
        rows = [r for r in read(path, allow_empty=True) if r.get('split', '') in ('', None, 'train')]
        added = [s for s in samples(rows, classes, path) if os.path.abspath(s[0]) not in have]
        have.update(os.path.abspath(p) for p, _ in added)
        out += added
        print(f'extra manifest {path}: {len(added)} training image(s) added')
    return out
