"""Every registered model on every dataset of the benchmark suite: is any of them near chance?

    python benchmarks/zoo.py                                      # every model, every dataset, 10 epochs, seed 0
    python benchmarks/zoo.py --models=SqueezeNet,AlexNet --stems=imagenet,small --datasets=glyphs
    python benchmarks/zoo.py --out=zoo.json --resume              # run only what zoo.json does not hold yet

Each run is `python main.py train --model=M --stem=S --max-epoch=E` with the defaults otherwise (as subprocesses,
through benchmarks/suite.py), then testforacc on the dataset's test split. A stem a model has no form of
(`small` for a `timm/` model outside its resnet, resnest and efficientnet modules) is skipped. Checkpoints are
deleted once tested (--keep keeps them); logs stay.

Near chance: test top-1 below chance + NEAR_CHANCE x (1 - chance), chance being 1 / classes (10 % on digits,
1.6 % on the 62 glyphs): a model that has learnt less than a quarter of the way from guessing to perfect.
"""
import argparse
import glob
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import datasets  # noqa: E402
from benchmarks.suite import read_runs, record, train_and_test  # noqa: E402

NEAR_CHANCE = 0.25


def near_chance(acc, classes):
    """Whether test top-1 `acc` is below chance + NEAR_CHANCE of the way from chance to 1."""
    chance = 1 / classes
    return acc < chance + NEAR_CHANCE * (1 - chance)


def table(runs):
    """Markdown: one row per (model, stem), one column per dataset (test top-1 %, * when near chance)."""
    names = list(dict.fromkeys(r['dataset'] for r in runs))
    cells = {}
    for r in runs:
        mark = ' *' if near_chance(r['test_acc'], r['classes']) else ''
        cells.setdefault((r['model'], r['stem']), {})[r['dataset']] = f'{100 * r["test_acc"]:.1f}{mark}'
    lines = ['| model | stem | ' + ' | '.join(names) + ' | seconds |', '|---|---|' + '---|' * (len(names) + 1)]
    for (model, stem), row in cells.items():
        seconds = sum(r['seconds'] for r in runs if (r['model'], r['stem']) == (model, stem))
        lines.append(f'| {model} | {stem} | ' + ' | '.join(row.get(n, '--') for n in names) + f' | {seconds:.0f} |')
    return '\n'.join(lines)


def main(argv=None):
    import models
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--models', default=','.join(models.list_models()), help='comma-separated registry names')
    p.add_argument('--stems', default='imagenet', help='comma-separated: imagenet, small, auto')
    p.add_argument('--datasets', default=','.join(datasets.DATASETS), help='comma-separated suite datasets')
    p.add_argument('--epochs', type=int, default=10, help='max_epoch of every run (0 = auto, as train does)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='', help='JSON file of every run (written after each one)')
    p.add_argument('--resume', action='store_true', help='reuse the runs --out already holds')
    p.add_argument('--keep', action='store_true', help='keep the checkpoints')
    p.add_argument('--data-root', default='', help='dataset cache (default $CLASSIFIER_SUITE_DATA)')
    p.add_argument('--work', default='', help='runs and logs (default: DATA_ROOT/zoo/<time>)')
    args = p.parse_args(argv)
    names = [n for n in args.datasets.split(',') if n]
    wanted = [models.canonical_name(m) for m in args.models.split(',') if m]
    bad = [n for n in names if n not in datasets.DATASETS] + [m for m in wanted if m not in models.list_models()]
    if bad:
        p.error(f'unknown dataset(s) or model(s) {bad}')
    data_root = args.data_root or datasets.default_root()
    work = args.work or os.path.join(data_root, 'zoo', time.strftime('%Y%m%d-%H%M%S'))
    runs = read_runs(args.out, args.resume, p.error)
    os.makedirs(work, exist_ok=True)
    done = {(r['dataset'], r['model'], r['stem'], r['epochs'], r['seed']) for r in runs}
    folders = {name: datasets.build(name, data_root) for name in names}
    for name in names:
        classes = len(os.listdir(os.path.join(folders[name], 'train')))
        for model in wanted:
            for stem in args.stems.split(','):
                if stem == 'small' and not models.has_small_stem(model):
                    continue
                key = (name, model, stem, args.epochs, args.seed)
                if key in done:
                    continue
                run_dir = os.path.join(work, f'{name}-{model}-{stem}-{args.epochs}ep-seed{args.seed}')
                start = time.time()
                test, f1, val = train_and_test(folders[name], dict(model=model, stem=stem, max_epoch=args.epochs,
                                                                   seed=args.seed), run_dir, run_dir + '.log')
                result = dict(zip(('dataset', 'model', 'stem', 'epochs', 'seed'), key), classes=classes,
                              test_acc=test, macro_f1=f1, val_acc=val, seconds=time.time() - start)
                if not args.keep:
                    for file in glob.glob(os.path.join(run_dir, '*.pth')):
                        os.remove(file)
                record(result, runs, args.out)
    mine = [r for r in runs if r['dataset'] in names and r['model'] in wanted and r['epochs'] == args.epochs
            and r['seed'] == args.seed]
    print(f'\ntest top-1 %, {args.epochs or "auto"} epochs, seed {args.seed}; * = near chance\n')
    print(table(mine))
    low = [f'{r["model"]} ({r["stem"]}) on {r["dataset"]}' for r in mine if near_chance(r['test_acc'], r['classes'])]
    print('\nnear chance: ' + (', '.join(low) if low else 'none'))
    return mine


if __name__ == '__main__':
    main()
