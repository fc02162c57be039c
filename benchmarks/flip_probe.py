"""Does a horizontal flip keep the label? A nearest-neighbour probe per suite dataset, and the per-class policy
that --hflip=auto decides from the training split (data/flips.py).

    python benchmarks/flip_probe.py                       # every dataset of benchmarks/datasets
    python benchmarks/flip_probe.py --datasets=photos,glyphs

A k-nearest-neighbour classifier (k = 1 and 5) on 16 px RGB thumbnails, each centred on its own mean, is fitted on
the training split and scores the validation split as it is and mirrored. Where a flip keeps the label, the mirrored
images are classified about as well (ratio near 1); where it changes the class (digits, letters), far worse.
Also prints the largest per-class drop in recall (k = 1), then each dataset's --hflip=auto decisions and their
cost. Seconds, not minutes: no network is trained.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import datasets  # noqa: E402
from benchmarks.suite import pixels  # noqa: E402


def flat(X):
    return (X - X.mean(axis=(1, 2, 3), keepdims=True)).reshape(len(X), -1)


def probe(folder):
    """{k: (accuracy, mirrored accuracy)} and the largest per-class recall drop (k = 1) on folder's val split."""
    from sklearn.neighbors import KNeighborsClassifier
    Xt, yt = pixels(os.path.join(folder, 'train'), 16)
    Xv, yv = pixels(os.path.join(folder, 'val'), 16)
    out, drop = {}, 0.0
    for k in (1, 5):
        knn = KNeighborsClassifier(k).fit(flat(Xt), yt)
        plain, mirrored = knn.predict(flat(Xv)), knn.predict(flat(Xv[:, :, ::-1]))
        out[k] = ((plain == yv).mean(), (mirrored == yv).mean())
        if k == 1:
            drop = max((plain[yv == c] == c).mean() - (mirrored[yv == c] == c).mean() for c in np.unique(yv))
    return out, drop


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--datasets', default=','.join(datasets.DATASETS))
    parser.add_argument('--data-root', default='', help='dataset cache (default $CLASSIFIER_SUITE_DATA or '
                                                        '~/.cache/classifier-suite)')
    args = parser.parse_args(argv)
    root = args.data_root or datasets.default_root()
    print('| dataset | k | val accuracy % | mirrored % | ratio | largest class drop (k=1) |\n|---|---|---|---|---|---|')
    decided = []
    for name in args.datasets.split(','):
        folder = datasets.build(name, root)
        result, drop = probe(folder)
        for k, (a, b) in result.items():
            print(f'| {name} | {k} | {100 * a:.1f} | {100 * b:.1f} | {b / a:.2f} | {100 * drop:.0f} |')
        decided.append((name, policy(os.path.join(folder, 'train'))))
    print('\n--hflip=auto, decided on each training split:')
    for name, (line, found) in decided:
        print(f'{name}: {line} ({found["images"]} images, {found["seconds"]} s)')


def policy(train_root):
    """(one line, the probe's record) of the --hflip=auto policy of a training folder."""
    from data import flips
    from data.dataset import find_classes, scan
    classes = find_classes(train_root)
    found = flips.probe(scan(train_root, classes), classes)
    return flips.describe(found['flips'], classes), found


if __name__ == '__main__':
    main()
