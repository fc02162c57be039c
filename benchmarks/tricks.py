"""Measure each training trick alone, and the write-up's full recipe, against a baseline.

    python -m benchmarks.tricks                         # ResNet34, 6 epochs, seed 0, every trick, one at a time
    python -m benchmarks.tricks --epochs=4 --only=baseline,cutmix_prob=0.5,ema
    python -m benchmarks.tricks --use-gpu --epochs=15 --seeds=0,1,2 --jobs=12 --threads=1 --combine

The data is a harder variant of the bundled digits demo, derived here: the training split made long-tailed
(class k keeps a (1/10)^(k/9) share of its images, so the rarest class is 10x rarer than the largest) and 10 %
of its labels flipped at random to another class. Validation is the demo's validation split; the score that
matters is on the demo's untouched, balanced test split. Every row uses the same seeds and budget; with several
seeds a cell is the mean and the sample standard deviation over them.

`--combine` adds one more row, chosen without looking at the test split: the baseline plus, from each group of
tricks that do the same job (augmentation preset, mixing, class balancing, loss, optimizer, schedule,
attention; jitter, erasing, normalisation and EMA each alone), the member whose mean validation accuracy beat
the baseline's by the most, if any did.
"""
import argparse
import json
import os
import random
import re
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')

# The plain recipe every row starts from (the book's: adam, plateau decay, cross-entropy, pad-and-crop, nothing
# else), given explicitly so that the table does not move when DefaultConfig's defaults do. The row `defaults`
# (run it with --only=defaults) is DefaultConfig as shipped, with nothing added.
BASELINE = dict(augment='basic', loss='ce', optimizer='adam', lr=1e-3, scheduler='plateau', jitter=0.0, erasing=0.0,
                normalize='imagenet', cutmix_prob=0.0, mixup_prob=0.0, sampler='shuffle', class_weight='none',
                attention='none', ema=False, hflip=False)
RECIPE = dict(attention='cbam', loss='joint', optimizer='ranger', cutmix_prob=0.5, sampler='imbalanced',
              scheduler='cosine', lb_neg='0.005')
TRICKS = {
    'baseline': {},
    'augment=none': dict(augment='none'),
    'augment=affine': dict(augment='affine'),
    'augment=resized': dict(augment='resized'),
    'augment=trivialaugment': dict(augment='trivialaugment'),
    'jitter=0.2': dict(jitter=0.2),
    'erasing=0.25': dict(erasing=0.25),
    'normalize=dataset': dict(normalize='dataset'),
    'cutmix_prob=0.5': dict(cutmix_prob=0.5),
    'mixup_prob=0.5': dict(mixup_prob=0.5),
    'sampler=weighted': dict(sampler='weighted'),
    'sampler=imbalanced': dict(sampler='imbalanced'),
    'class_weight=effective_number': dict(class_weight='effective_number'),
    'loss=label_smooth': dict(loss='label_smooth'),
    'loss=joint': dict(loss='joint'),
    'optimizer=ranger': dict(optimizer='ranger'),
    'optimizer=adamw': dict(optimizer='adamw'),
    'scheduler=cosine': dict(scheduler='cosine', warmup_epochs=1),
    'scheduler=onecycle': dict(scheduler='onecycle'),
    'attention=se': dict(attention='se'),
    'attention=cbam': dict(attention='cbam'),
    'ema': dict(ema=True),
    'full recipe': RECIPE,
}
OPTIONAL = {'defaults': {}}  # run only when named in --only
GROUPS = {'augment': 'augment=', 'mixing': ('cutmix_prob=', 'mixup_prob='),
          'balance': ('sampler=', 'class_weight='), 'loss': 'loss=', 'optimizer': 'optimizer=',
          'schedule': 'scheduler=', 'attention': 'attention=', 'jitter': 'jitter=', 'erasing': 'erasing=',
          'normalize': 'normalize=', 'ema': 'ema'}


def make_hard_demo(out, seed=0, ratio=10.0, noise=0.10, demo=None):
    """Long-tailed, label-noisy copy of the train split of the demo (data/demo, or the demo folder `demo`) under
    out/train; val and test point at the demo's own (untouched) splits. Returns (train, val, test) roots."""
    from data.demo import ensure_demo
    demo = os.path.abspath(demo or ensure_demo(os.path.join(ROOT, 'data', 'demo')))
    classes = sorted(os.listdir(os.path.join(demo, 'train')))
    rng = random.Random(seed)
    train = os.path.join(out, 'train')
    if os.path.isdir(train):
        shutil.rmtree(train)
    kept = []
    for k, name in enumerate(classes):
        files = sorted(os.listdir(os.path.join(demo, 'train', name)))
        rng.shuffle(files)
        n = max(1, round(len(files) * ratio ** (-k / (len(classes) - 1))))
        kept += [(os.path.join(demo, 'train', name, f), k) for f in files[:n]]
    flipped = set(rng.sample(range(len(kept)), round(noise * len(kept))))
    counts = [0] * len(classes)
    for i, (path, k) in enumerate(kept):
        label = rng.choice([c for c in range(len(classes)) if c != k]) if i in flipped else k
        counts[label] += 1
        folder = os.path.join(train, classes[label])
        os.makedirs(folder, exist_ok=True)
        shutil.copy(path, os.path.join(folder, os.path.basename(path)))
    print(f'training data: {len(kept)} images, per class {counts}, {len(flipped)} labels flipped')
    return train, os.path.join(demo, 'val'), os.path.join(demo, 'test')


def macro_f1(cm):
    import numpy as np
    tp = np.diag(cm).astype(float)
    precision = tp / np.maximum(cm.sum(0), 1)
    recall = tp / np.maximum(cm.sum(1), 1)
    return float(np.mean(np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall,
                                                                                              1e-12), 0)))


def run_one(name, overrides, roots, args, out, seed):
    import torch
    import config
    from data import loaders
    from data.dataset import BadFileLog
    from utils.train import engine
    from utils.evaluate import loop
    from utils.evaluate import metrics
    train, val, test = roots
    settings = dict(train_data_root=train, val_data_root=val, test_data_root=test, model=args.model,
                    max_epoch=args.epochs, batch_size=args.batch_size, num_workers=args.num_workers, vis=False,
                    seed=seed, use_gpu=args.use_gpu, checkpoint_dir=os.path.join(out, 'runs'),
                    run_name=re.sub(r'[^A-Za-z0-9_.+-]+', '-', name) + f'-seed{seed}')
    if name != 'defaults':
        settings.update(BASELINE)
    settings.update(overrides)
    if settings.get('attention', 'none') != 'none' and args.model.lower() not in ('resnet34', 'resnet101'):
        settings['attention'] = 'none'  # attention exists for the ResNet family only
    cfg = config.parse(**settings)
    torch.set_num_threads(args.threads)
    start = time.time()
    run_dir = engine.fit(cfg)
    seconds = time.time() - start
    best = os.path.join(run_dir, 'best_model.pth')
    if cfg.ema and os.path.exists(os.path.join(run_dir, 'best_model_ema.pth')):
        raw = torch.load(best, weights_only=True)['best_metric']
        ema = torch.load(os.path.join(run_dir, 'best_model_ema.pth'), weights_only=True)['best_metric']
        best = os.path.join(run_dir, 'best_model_ema.pth') if ema > raw else best  # the better one, as reported
    model, ecfg, ckpt, device = loop.load_for_eval(config.parse(load_path=best, num_workers=args.num_workers,
                                                                  use_gpu=args.use_gpu))
    dataset = loaders.eval_dataset(ecfg, test, ckpt['classes'])
    result = loop.evaluate(model, loaders.eval_loader(dataset, ecfg), torch.nn.CrossEntropyLoss(), device,
                             BadFileLog(), 'test')
    cm = metrics.confusion(result['targets'], result['probs'].argmax(1), len(ckpt['classes']))
    return {'trick': name, 'seed': seed, 'model': args.model, 'epochs': args.epochs, 'val_acc': ckpt['best_metric'], 'test_acc': result['acc'],
            'macro_f1': macro_f1(cm), 'seconds': seconds}


def summarize(runs, names):
    """One row per trick: mean and sample standard deviation over its seeds of each figure."""
    import statistics
    rows = []
    for name in names:
        mine = [r for r in runs if r['trick'] == name]
        row = {'trick': name, 'runs': len(mine)}
        for key in ('val_acc', 'test_acc', 'macro_f1', 'seconds'):
            values = [r[key] for r in mine]
            row[key] = statistics.fmean(values)
            row[key + '_sd'] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def table(rows):
    def cell(row, key, scale=100):
        text = f'{scale * row[key]:.2f}' if scale == 100 else f'{row[key]:.0f}'
        return text + (f' ± {scale * row[key + "_sd"]:.{2 if scale == 100 else 0}f}' if row['runs'] > 1 else '')
    base = next((r for r in rows if r['trick'] == 'baseline'), None)
    lines = ['| trick | val acc | test acc | test vs baseline | test macro-F1 | seconds |',
             '|---|---|---|---|---|---|']
    for r in rows:
        delta = f'{100 * (r["test_acc"] - base["test_acc"]):+.2f}' if base and r is not base else ''
        lines.append(f'| {r["trick"]} | {cell(r, "val_acc")} | {cell(r, "test_acc")} | {delta} | '
                     f'{cell(r, "macro_f1")} | {cell(r, "seconds", 1)} |')
    return '\n'.join(lines)


def group_of(name):
    return next((g for g, prefixes in GROUPS.items() if name.startswith(prefixes)), None)


def combination(rows):
    """(name, overrides) of the baseline plus, per group, the trick that beat the baseline's mean validation
    accuracy by the most; None when none did."""
    base = next(r for r in rows if r['trick'] == 'baseline')
    best = {}
    for r in rows:
        group = group_of(r['trick'])
        if group and r['val_acc'] > base['val_acc'] and r['val_acc'] > best.get(group, base)['val_acc']:
            best[group] = r
    if not best:
        return None
    chosen = [best[g]['trick'] for g in GROUPS if g in best]
    overrides = {}
    for name in chosen:
        overrides.update(TRICKS[name])
    return 'combined: ' + ' + '.join(chosen), overrides


def previous_runs(args):
    """Runs of this model and budget already recorded in OUT/results.jsonl (for --resume)."""
    path = os.path.join(args.out, 'results.jsonl')
    if not args.resume or not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r.get('model') == args.model and r.get('epochs') == args.epochs]


def run_all(jobs, roots, args):
    """Every (name, overrides, seed) in `jobs`, in this process or in `args.jobs` parallel ones; with --resume,
    the ones already recorded are read back instead of run again."""
    runs, done_before = [], {(r['trick'], r['seed']): r for r in previous_runs(args)}
    runs += [done_before[name, seed] for name, _, seed in jobs if (name, seed) in done_before]
    jobs = [job for job in jobs if (job[0], job[2]) not in done_before]
    if runs:
        print(f'--resume: {len(runs)} run(s) read back from {args.out}/results.jsonl, {len(jobs)} to go', flush=True)

    def done(row):
        runs.append(row)
        print(f'{row["trick"]} (seed {row["seed"]}): {json.dumps(row)}', flush=True)
        with open(os.path.join(args.out, 'results.jsonl'), 'a') as f:
            f.write(json.dumps(row) + '\n')
    if args.jobs <= 1:
        for name, overrides, seed in jobs:
            done(run_one(name, overrides, roots, args, args.out, seed))
        return runs
    import concurrent.futures
    import multiprocessing
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context('spawn')) as pool:
        futures = [pool.submit(run_one, name, overrides, roots, args, args.out, seed)
                   for name, overrides, seed in jobs]
        for future in concurrent.futures.as_completed(futures):
            done(future.result())
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='ResNet34')
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--seeds', default='0', help='comma-separated training seeds; each row runs once per seed')
    parser.add_argument('--data-seed', type=int, default=0, help='seed of the long tail and the flipped labels')
    parser.add_argument('--jobs', type=int, default=1, help='runs at a time, in separate processes (seconds '
                                                            'then include the sharing)')
    parser.add_argument('--combine', action='store_true', help='add the validation-selected combination row')
    parser.add_argument('--resume', action='store_true', help='reuse the runs already in OUT/results.jsonl (same '
                                                              'model and epochs) and run only the missing ones')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads for torch')
    parser.add_argument('--num-workers', type=int, default=0, help='data-loading processes')
    parser.add_argument('--use-gpu', action='store_true', help='train on CUDA (timings then are not CPU figures)')
    parser.add_argument('--only', default='', help='comma-separated trick names (default: all)')
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'out', 'tricks'))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(',') if n.strip()] or list(TRICKS)
    if args.model.lower() not in ('resnet34', 'resnet101'):
        names = [n for n in names if not n.startswith('attention=')]
    TRICKS.update(OPTIONAL)
    unknown = [n for n in names if n not in TRICKS]
    if unknown:
        parser.error(f'unknown trick(s) {unknown}; choose from: {", ".join(TRICKS)}')
    if args.combine and 'baseline' not in names:
        parser.error('--combine needs the baseline row')
    seeds = [int(s) for s in args.seeds.split(',')]
    os.makedirs(args.out, exist_ok=True)
    roots = make_hard_demo(os.path.join(args.out, 'data'), seed=args.data_seed)
    runs = run_all([(name, TRICKS[name], seed) for name in names for seed in seeds], roots, args)
    rows = summarize(runs, names)
    if args.combine:
        picked = combination(rows)
        if picked is None:
            print('\n--combine: no trick beat the baseline on validation; nothing to combine')
        else:
            TRICKS[picked[0]] = picked[1]
            print(f'\n--combine: {picked[0]} = {picked[1]}', flush=True)
            runs += run_all([(picked[0], picked[1], seed) for seed in seeds], roots, args)
            rows = summarize(runs, names + [picked[0]])
    print(f'\n{args.model}, {args.epochs} epochs, batch {args.batch_size}, seeds {args.seeds}, data seed '
          f'{args.data_seed}, {"CUDA" if args.use_gpu else f"{args.threads} CPU threads"}, {args.jobs} run(s) at a '
          f'time; val = demo validation split (216), test = demo test split (360, balanced, clean)'
          + ('; cells are mean ± sd over the seeds' if len(seeds) > 1 else '') + '\n')
    print(table(rows))
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
        f.write(table(rows) + '\n')
    return rows


if __name__ == '__main__':
    main()
