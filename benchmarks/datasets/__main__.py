"""python -m benchmarks.datasets --list | --build=NAME[,NAME] [--seed=0] [--root=DIR]"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmarks import datasets  # noqa: E402
from config import UserError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.datasets', description=__doc__)
    parser.add_argument('--list', action='store_true', help='name and describe every dataset')
    parser.add_argument('--build', default='', help='comma-separated names, or all')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--root', default='', help='cache folder (default $CLASSIFIER_SUITE_DATA or '
                                                   '~/.cache/classifier-suite)')
    args = parser.parse_args(argv)
    if args.list or not args.build:
        for name, (_, text) in datasets.DATASETS.items():
            print(f'{name:16s} {text}')
        return
    names = list(datasets.DATASETS) if args.build == 'all' else args.build.split(',')
    try:
        for name in names:
            folder = datasets.build(name, args.root or None, args.seed)
            counts = datasets.class_counts(folder)
            print(f'{name}: {folder} -- ' + ', '.join(f'{s} {sum(c.values())} images' for s, c in counts.items())
                  + f', {len(counts["train"])} classes')
    except UserError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
