"""The benchmark suite's datasets: real images from packaged sources, written as image folders, built offline.

Each dataset NAME has a builder here, a function `build(root, seed=0)` (DATASETS names it), which writes
root/NAME/{train,val,test}/<class>/*.png -- the same bytes for the same seed and installed packages -- and returns
root/NAME. A finished dataset carries a `.complete` record (builder, seed, version); a second build with the same
record returns at once. The cache lives outside the repository: $CLASSIFIER_SUITE_DATA, else
~/.cache/classifier-suite.

    python -m benchmarks.datasets --list
    python -m benchmarks.datasets --build=photos [--seed=0] [--root=DIR]
"""
import importlib
import json
import os
import shutil
import tempfile

from config import UserError

# name -> (module.function of its builder, one-line description); the order is the suite's
DATASETS = {
    'digits': ('digits.build', "the bundled demo: scikit-learn's 1797 handwritten digits, 32 px, stratified "
                               'split; direction-bearing (a flip changes the class)'),
    'digits-lt-noisy': ('digits.build_lt_noisy', "the demo's training split long-tailed (10:1) with 10 % of its "
                                                 "labels flipped; the demo's validation and test splits"),
    'photos': ('photos.build', 'natural-photo patches, 40 px, 10 classes = 10 photographs of mate-backgrounds, '
                               'long-tailed training (120 .. 12 per class); test patches from regions disjoint '
                               'from training'),
    'glyphs': ('glyphs.build', '62 characters 0-9 A-Z a-z rendered at 32 px from installed font families '
                               '(fonts-*); train / val / test split by typeface design: a test font is never seen '
                               'in training'),
    'signs': ('signs.build', 'arrows, signs and symbols rendered at 32 px from 10 typeface designs: 6 mirror pairs '
                             '(left / right arrow, < / >, ...), 10 mirror-symmetric classes (up arrow, heart, A, ...) '
                             'and 10 that a flip turns into no class (note, ?, 7, R, ...); split by design'),
    'scenes96': ('photos.build_scenes96', 'scene patches, 96 px, 10 classes = 10 photographs of lomiri-wallpapers '
                                          'and plasma-workspace-wallpapers, 30 training images per class; disjoint '
                                          'test regions'),
}
VERSION = 1
SPLITS = ('train', 'val', 'test')


def default_root():
    """The dataset cache: $CLASSIFIER_SUITE_DATA, else ~/.cache/classifier-suite."""
    return os.environ.get('CLASSIFIER_SUITE_DATA') or os.path.join(os.path.expanduser('~'), '.cache',
                                                                   'classifier-suite')


def build(name, root=None, seed=0):
    """Build dataset `name` under `root` (default_root()) unless built already; returns its folder."""
    if name not in DATASETS:
        raise UserError(f'unknown dataset {name!r}: choose from {", ".join(DATASETS)}')
    module, function = DATASETS[name][0].split('.')
    return getattr(importlib.import_module(f'{__name__}.{module}'), function)(root or default_root(), seed=seed)


def write_once(root, name, seed, fill):
    """Call fill(folder) to write the splits into a fresh folder, then put it at root/name with its `.complete`
    record in one rename, so that a crash never leaves a half-written dataset in place. A finished dataset with
    the same record is kept as it is; one with another record (seed, version) is replaced; a folder there without
    a record is not ours and is refused."""
    target = os.path.join(root, name)
    record = {'dataset': name, 'seed': seed, 'version': VERSION}
    marker = os.path.join(target, '.complete')
    old = None
    if os.path.exists(target):
        if not os.path.exists(marker):
            raise UserError(f'{target} exists and is not a dataset of this suite: move it away or give another '
                            f'--root')
        with open(marker) as f:
            old = json.load(f)
        if old == record:
            return target
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root, prefix=f'.{name}-')
    try:
        fill(tmp)
        with open(os.path.join(tmp, '.complete'), 'w') as f:
            json.dump(record, f)
        if old is not None:  # our own older build: set aside, then removed once the new one is in place
            aside = tempfile.mkdtemp(dir=root, prefix=f'.{name}-old-')
            os.replace(target, os.path.join(aside, name))
            os.replace(tmp, target)
            shutil.rmtree(aside)
        else:
            os.replace(tmp, target)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return target


def class_counts(folder):
    """{split: {class: images}} of a built dataset."""
    return {split: {c: len(os.listdir(os.path.join(folder, split, c)))
                    for c in sorted(os.listdir(os.path.join(folder, split)))} for split in SPLITS}
