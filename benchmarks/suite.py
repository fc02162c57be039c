"""The benchmark suite: every recipe row on every dataset of benchmarks/datasets, test top-1, macro-F1 and wall
time, as a markdown table (mean ± sample sd over the seeds).

    python benchmarks/suite.py                                    # every dataset and row, seed 0
    python benchmarks/suite.py --datasets=photos,glyphs --rows=defaults,plain,rbf-svm --seeds=0,1,2
    python benchmarks/suite.py --quick --datasets=digits --rows=rbf-svm,defaults    # CI-sized: subsets, 1 epoch
    python benchmarks/suite.py --out=suite.json --resume          # run only what suite.json does not hold yet
    python benchmarks/suite.py --rows=defaults,defaults+loss=ce,defaults+hflip=True   # ablations of the defaults
    python benchmarks/suite.py --out=suite.json --resume --work=W --tta=hflip   # each run tested with TTA too

Rows (nothing is chosen on the test split; the validation split chooses where anything is chosen):
  defaults   python main.py train, then testforacc, as subprocesses, with nothing but the data given
  plain      the book's recipe (benchmarks/tricks.py BASELINE: adam, plateau decay, cross-entropy, pad-and-crop,
             no jitter / erasing / mixing / attention / EMA, ImageNet normalisation), same budget as defaults
  rbf-svm    scikit-learn's SVC (RBF kernel) on the raw pixels, C and gamma chosen on the validation split
  writeup    the write-up's recipe (BASELINE + tricks.py RECIPE: CBAM, joint loss, Ranger, CutMix, imbalanced
             sampler, cosine schedule)
  reference  benchmarks/reference_small_data.py, a hand-written small-data recipe outside the toolkit
  tune       python main.py tune (when the toolkit has it) on the train and validation splits, then
             train --config=best_config.json; skipped with a note otherwise
  defaults+KEY=VALUE[+KEY=VALUE...]
             the defaults with these settings changed (an ablation); the ablation table under the main one gives
             each such row's test top-1 minus the defaults' at the same seed, and the mean rank over the datasets
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import datasets  # noqa: E402
from benchmarks.tricks import BASELINE, RECIPE  # noqa: E402
import config  # noqa: E402
from config import UserError  # noqa: E402
from utils.io import write_json  # noqa: E402

ROWS = ('defaults', 'plain', 'rbf-svm', 'writeup', 'reference', 'tune')
TOOLKIT = {'defaults': {}, 'plain': BASELINE, 'writeup': {**BASELINE, **RECIPE}}
QUICK_PER_CLASS = {'train': 8, 'val': 4, 'test': 6}
TUNE_TIMEOUT = 1200  # seconds: a 20-minute budget
VARIANT = 'defaults+'  # defaults+KEY=VALUE[+KEY=VALUE...]: the defaults with these settings changed


def row_settings(row):
    """The toolkit settings of `row`: TOOLKIT's, or the changes a variant row names ({} for other rows).
    A variant row's settings are checked like the command line's: a bad one raises UserError."""
    if not row.startswith(VARIANT):
        return TOOLKIT.get(row, {})
    pairs = row[len(VARIANT):].split('+')
    if not all('=' in p and p.split('=', 1)[0] for p in pairs):
        raise UserError(f'row {row!r}: a variant row is defaults+KEY=VALUE[+KEY=VALUE...], e.g. defaults+loss=ce')
    settings = dict(p.split('=', 1) for p in pairs)
    try:
        config.parse(**settings)
    except UserError as e:
        raise UserError(f'row {row!r}: {e}') from None
    return settings


def row_order(row):
    """Sort key of a row: the ROWS order, each variant after the defaults."""
    return (ROWS.index('defaults'), row) if row.startswith(VARIANT) else (ROWS.index(row), '')


def quick_subset(folder, out):
    """The first QUICK_PER_CLASS images of each class of each split of `folder`, copied to `out`."""
    for split, k in QUICK_PER_CLASS.items():
        for name in sorted(os.listdir(os.path.join(folder, split))):
            dst = os.path.join(out, split, name)
            os.makedirs(dst, exist_ok=True)
            for file in sorted(os.listdir(os.path.join(folder, split, name)))[:k]:
                shutil.copy(os.path.join(folder, split, name, file), dst)
    return out


def main_py(command, settings, log):
    """Run `python main.py COMMAND --key=value ...`, its output appended to `log`; stops on failure."""
    argv = [sys.executable, os.path.join(ROOT, 'main.py'), command] + [f'--{k}={v}' for k, v in settings.items()]
    env = dict(os.environ, HF_HUB_OFFLINE='1', PAGER='cat', PYTHONUNBUFFERED='1')
    with open(log, 'a') as f:
        f.write('$ ' + ' '.join(argv) + '\n')
        f.flush()
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f'{command} failed (rc {done.returncode}); end of {log}:\n{tail}')


def train_and_test(folder, settings, run_dir, log):
    """train with `settings` into run_dir, then testforacc on folder/test: (test top-1, macro-F1, val top-1)."""
    import torch
    main_py('train', dict(settings, train_data_root=f'{folder}/train', val_data_root=f'{folder}/val',
                          test_data_root=f'{folder}/test', checkpoint_dir=os.path.dirname(run_dir),
                          run_name=os.path.basename(run_dir), vis=False, html_report=False), log)
    best = os.path.join(run_dir, 'best_model.pth')
    main_py('testforacc', dict(load_path=best, test_data_root=f'{folder}/test', vis=False, html_report=False), log)
    with open(os.path.join(run_dir, 'test_metrics.json')) as f:
        metrics = json.load(f)
    return metrics['top1'], metrics['macro']['f1'], torch.load(best, weights_only=True)['best_metric']


def tta_test(run_dir, folder, tta, log):
    """testforacc of run_dir's best_model.pth on folder/test with --tta=tta: its test top-1 (the report goes to
    test_tta-<tta>_*, beside the run's test_* files)."""
    main_py('testforacc', dict(load_path=os.path.join(run_dir, 'best_model.pth'), test_data_root=f'{folder}/test',
                               tta=tta, vis=False, html_report=False), log)
    with open(os.path.join(run_dir, f'test_tta-{tta}_metrics.json')) as f:
        return json.load(f)['top1']


def add_tta(runs, chosen, folders, work, tta, out):
    """Test every toolkit run of `runs` that chosen(run) keeps and that has no result with --tta=tta yet, on its
    dataset's folder in `folders`, from its best_model.pth under `work`: sets its 'tta' and 'tta_acc' and
    rewrites `out` with every run. Returns notes for runs whose checkpoint is gone."""
    notes = []
    for r in runs:
        if not chosen(r) or r.get('tta') == tta or not (r['row'] in TOOLKIT or r['row'] == 'tune'
                                                        or r['row'].startswith(VARIANT)):
            continue
        run_dir = run_path(folders[r['dataset']], r['row'], r['seed'], work)
        if not os.path.isfile(os.path.join(run_dir, 'best_model.pth')):
            notes.append(f'{r["dataset"]} {r["row"]} seed {r["seed"]}: no {run_dir}/best_model.pth to test with '
                         f'--tta={tta} (give the --work of its run)')
            continue
        r.update(tta=tta, tta_acc=tta_test(run_dir, folders[r['dataset']], tta, run_dir + '.log'))
        print(json.dumps(r), flush=True)
        if out:
            write_json({'runs': runs}, out)
    return notes


def pixels(root, size=0):
    """(X, y): the images under root/<class>/ as (N, H, W, 3) RGB arrays in 0..1 (resized to size x size,
    bilinear, when size is given), and their class indices."""
    import numpy as np
    from PIL import Image
    X, y = [], []
    for k, name in enumerate(sorted(os.listdir(root))):
        for file in sorted(os.listdir(os.path.join(root, name))):
            with Image.open(os.path.join(root, name, file)) as img:
                img = img.convert('RGB')
                X.append(np.asarray(img.resize((size, size), Image.BILINEAR) if size else img, np.float32) / 255)
            y.append(k)
    return np.stack(X), np.array(y)


def rbf_svm(folder, quick):
    """SVC(rbf) on raw pixels, C and gamma chosen by validation accuracy: (test top-1, macro-F1, val top-1)."""
    from sklearn.metrics import f1_score
    from sklearn.svm import SVC
    (X, y), (Xv, yv), (Xt, yt) = ((x.reshape(len(x), -1), y) for x, y in
                                  (pixels(os.path.join(folder, s)) for s in datasets.SPLITS))
    scale = 1.0 / (X.shape[1] * X.var())  # sklearn's gamma='scale'
    grid = [(10, scale)] if quick else [(c, g * scale) for c in (1, 10, 100) for g in (1 / 3, 1, 3)]
    val, c, g = max((SVC(C=c, gamma=g).fit(X, y).score(Xv, yv), c, g) for c, g in grid)
    predicted = SVC(C=c, gamma=g).fit(X, y).predict(Xt)
    return float((predicted == yt).mean()), float(f1_score(yt, predicted, average='macro')), val


def has_tune():
    """Whether `python main.py help` lists a tune command."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), 'help'], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PAGER='cat')).stdout
    return any(line.split()[:1] == ['tune'] for line in out.splitlines())


def run_path(folder, row, seed, work):
    """The run folder of `row` on the dataset `folder` at `seed` under `work` (its log is that path + '.log')."""
    return os.path.join(work, f'{os.path.basename(folder)}-{row.replace("/", "_")}-seed{seed}')


def run_row(row, folder, seed, work, quick):
    """One row on one dataset folder and seed: a result dict (test_acc, macro_f1, val_acc, seconds)."""
    run_dir = run_path(folder, row, seed, work)
    os.makedirs(work, exist_ok=True)
    log = run_dir + '.log'
    epochs = {'max_epoch': 1} if quick else {}
    start = time.time()
    if row in TOOLKIT or row.startswith(VARIANT):
        test, f1, val = train_and_test(folder, dict(row_settings(row), seed=seed, **epochs), run_dir, log)
    elif row == 'rbf-svm':
        test, f1, val = rbf_svm(folder, quick)
    elif row == 'reference':
        out = run_dir + '.json'
        with open(log, 'a') as f:
            subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'reference_small_data.py'), folder,
                            f'--seed={seed}', f'--out={out}'] + (['--epochs=1'] if quick else []), check=True,
                           stdout=f, stderr=subprocess.STDOUT)
        with open(out) as f:
            result = json.load(f)
        test, f1, val = result['test_acc'], result['macro_f1'], None
    else:  # tune: its trials choose on the validation split; the best settings are then trained once more
        budget = dict(n_trials=2, **epochs) if quick else dict(n_trials=0, timeout=TUNE_TIMEOUT)  # the clock decides
        main_py('tune', dict(budget, train_data_root=f'{folder}/train', val_data_root=f'{folder}/val',
                             checkpoint_dir=work, run_name=os.path.basename(run_dir) + '-study', seed=seed,
                             vis=False), log)
        config = os.path.join(work, os.path.basename(run_dir) + '-study', 'best_config.json')
        test, f1, val = train_and_test(folder, dict(config=config, seed=seed), run_dir, log)
    return {'test_acc': test, 'macro_f1': f1, 'val_acc': val, 'seconds': time.time() - start}


def summarize(runs):
    """One row per (dataset, row), in the suite's order: mean and sample sd over its seeds of each figure."""
    groups = {}
    for r in sorted(runs, key=lambda r: (list(datasets.DATASETS).index(r['dataset']), row_order(r['row']))):
        groups.setdefault((r['dataset'], r['row']), []).append(r)
    rows = []
    for (dataset, row), mine in groups.items():
        out = {'dataset': dataset, 'row': row, 'seeds': len(mine)}
        for key in ('test_acc', 'tta_acc', 'macro_f1', 'val_acc', 'seconds'):
            values = [r[key] for r in mine if r.get(key) is not None]
            out[key] = statistics.fmean(values) if values else None
            out[key + '_sd'] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(out)
    return rows


def table(rows, notes=()):
    """The markdown table of `rows` (percentages; ± the sd over seeds when there are several), then `notes`."""
    def cell(row, key, scale=100.0, digits=1):
        if row[key] is None:
            return '--'
        text = f'{scale * row[key]:.{digits}f}'
        return text + (f' ± {scale * row[key + "_sd"]:.{digits}f}' if row[key + '_sd'] is not None else '')
    tta = any(r['tta_acc'] is not None for r in rows)  # a column of its own only where some run has it
    lines = ['| dataset | row | test top-1 % |' + (' with TTA |' if tta else '') +
             ' test macro-F1 % | val top-1 % | seconds | seeds |', '|---|---|---|' + ('---|' if tta else '') +
             '---|---|---|---|']
    lines += [f'| {r["dataset"]} | {r["row"]} | {cell(r, "test_acc")} |' + (f' {cell(r, "tta_acc")} |' if tta else '')
              + f' {cell(r, "macro_f1")} | {cell(r, "val_acc")} | {cell(r, "seconds", 1, 0)} | {r["seeds"]} |'
              for r in rows]
    return '\n'.join(lines + [''] + [f'- {n}' for n in notes])


def verdicts(rows, runs=()):
    """Per dataset: do the defaults beat plain and rbf-svm on test (mean over seeds, and at how many of the seeds
    both were run with), and how far are they from the reference."""
    by = {(r['dataset'], r['row']): r['test_acc'] for r in rows}
    per_seed = {(r['dataset'], r['row'], r['seed']): r['test_acc'] for r in runs}

    def seeds_won(dataset, other):
        pairs = [(acc, per_seed[d, 'defaults', seed]) for (d, row, seed), acc in per_seed.items()
                 if d == dataset and row == other and (d, 'defaults', seed) in per_seed]
        if other == 'rbf-svm' or len(pairs) < 2:  # the SVM has no seed
            return ''
        return f', at {sum(mine > theirs for theirs, mine in pairs)} of {len(pairs)} seeds'
    lines = []
    for dataset in dict.fromkeys(r['dataset'] for r in rows):
        mine = by.get((dataset, 'defaults'))
        if mine is None:
            continue
        parts = [f'defaults {"beat" if mine > by[dataset, other] else "do not beat"} {other} '
                 f'({100 * (mine - by[dataset, other]):+.1f}{seeds_won(dataset, other)})'
                 for other in ('plain', 'rbf-svm') if (dataset, other) in by]
        if (dataset, 'tune') in by:
            parts.append(f'tune {"beats" if by[dataset, "tune"] > mine else "does not beat"} the defaults '
                         f'({100 * (by[dataset, "tune"] - mine):+.1f})')
        if (dataset, 'reference') in by:
            parts.append(f'{100 * (mine - by[dataset, "reference"]):+.1f} points from the reference')
        if parts:
            lines.append(f'{dataset}: ' + '; '.join(parts))
    return lines


def ablation(runs):
    """The ablation table of the variant rows in `runs`: per dataset the defaults' test top-1 and each variant's
    difference from it (means over the seeds both were run with), the mean difference, the datasets a variant
    wins, and the mean rank over the datasets of the defaults and every variant (1 = best, from each row's mean
    over its own seeds); '' without variants."""
    by = {}  # (dataset, row): {seed: test top-1}
    for r in runs:
        by.setdefault((r['dataset'], r['row']), {})[r['seed']] = r['test_acc']
    variants = sorted({row for _, row in by if row.startswith(VARIANT)})
    if not variants:
        return ''
    names = [d for d in datasets.DATASETS if any((d, v) in by for v in variants)]

    def diff(d, v):  # the variant's mean minus the defaults', over the seeds both ran; None without such seeds
        seeds = by.get((d, v), {}).keys() & by.get((d, 'defaults'), {}).keys()
        return statistics.fmean(by[d, v][s] - by[d, 'defaults'][s] for s in seeds) if seeds else None
    ranks = {}  # from each row's mean over its own seeds; ties share the better rank
    for d in names:
        scores = {row: statistics.fmean(by[d, row].values()) for row in ['defaults'] + variants if (d, row) in by}
        for row, score in scores.items():
            ranks.setdefault(row, []).append(1 + sum(other > score for other in scores.values()))

    def rank(row):
        return f'{statistics.fmean(ranks[row]):.1f}' if row in ranks else '--'
    lines = ['| row | ' + ' | '.join(names) + ' | mean diff | datasets won | mean rank |',
             '|---' * (len(names) + 4) + '|',
             '| defaults (test top-1 %) | ' + ' | '.join(f'{100 * statistics.fmean(by[d, "defaults"].values()):.1f}'
                                                        if (d, 'defaults') in by else '--' for d in names) +
             f' | | | {rank("defaults")} |']
    for v in variants:
        diffs = {d: x for d in names if (x := diff(d, v)) is not None}
        lines.append(f'| {v[len(VARIANT):]} | ' + ' | '.join(f'{100 * diffs[d]:+.1f}' if d in diffs else '--'
                                                             for d in names) +
                     f' | {f"{100 * statistics.fmean(diffs.values()):+.1f}" if diffs else "--"} | '
                     f'{sum(x > 0 for x in diffs.values())} of '
                     f'{len(diffs)} | {rank(v)} |')
    return '\n'.join(lines)


def read_runs(out, resume, error):
    """Every run the JSON file `out` holds, to add to with --resume ([] when there is none). An existing file
    without --resume is refused through error(message) before any run: rewriting it would lose its runs."""
    if not out or not os.path.exists(out):
        return []
    if not resume:
        error(f'{out} already holds runs; give --resume to add to them, or another --out')
    with open(out) as f:
        return json.load(f)['runs']


def record(result, runs, out):
    """Add one finished run: appended to runs, printed as a JSON line, and `out` rewritten (atomically) with every
    run, those of other settings too."""
    runs.append(result)
    print(json.dumps(result), flush=True)
    if out:
        write_json({'runs': runs}, out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--datasets', default=','.join(datasets.DATASETS), help='comma-separated names')
    parser.add_argument('--rows', default=','.join(ROWS), help='comma-separated rows: ' + ', '.join(ROWS))
    parser.add_argument('--seeds', default='0', help='comma-separated training seeds (the data is built with 0)')
    parser.add_argument('--quick', action='store_true', help='CI-sized: a few images per class, 1 epoch')
    parser.add_argument('--out', default='', help='JSON file of every run (written after each one)')
    parser.add_argument('--resume', action='store_true', help='reuse the runs --out already holds')
    parser.add_argument('--data-root', default='', help='dataset cache (default $CLASSIFIER_SUITE_DATA or '
                                                        '~/.cache/classifier-suite)')
    parser.add_argument('--work', default='', help='where runs and logs go (default: DATA_ROOT/runs/<time>)')
    parser.add_argument('--tta', default='none', choices=config.TTA,
                        help='also test each toolkit run with this test-time augmentation (runs --out already '
                             'holds too, from their best_model.pth under --work); the table gets a column of it')
    args = parser.parse_args(argv)
    names = [n for n in args.datasets.split(',') if n]
    rows = [r for r in args.rows.split(',') if r]
    bad = [n for n in names if n not in datasets.DATASETS] + [r for r in rows if r not in ROWS and
                                                               not r.startswith(VARIANT)]
    if bad:
        parser.error(f'unknown dataset(s) or row(s) {bad}; datasets: {", ".join(datasets.DATASETS)}; rows: '
                     f'{", ".join(ROWS)}, {VARIANT}KEY=VALUE[+KEY=VALUE...]')
    try:
        for row in rows:
            row_settings(row)
    except UserError as e:
        parser.error(str(e))
    seeds = [int(s) for s in args.seeds.split(',')]
    data_root = args.data_root or datasets.default_root()
    work = args.work or os.path.join(data_root, 'runs', time.strftime('%Y%m%d-%H%M%S'))
    notes = []
    if 'tune' in rows and not has_tune():
        rows.remove('tune')
        notes.append('tune: skipped, `python main.py help` lists no tune command yet')
    runs = read_runs(args.out, args.resume, parser.error)  # all kept; --quick runs and full ones never mix
    done = {(r['dataset'], r['row'], r['seed']) for r in runs if r['quick'] == args.quick}
    try:  # every dataset is there before the first run starts
        folders = {name: datasets.build(name, data_root) for name in names}
    except UserError as e:
        sys.exit(f'error: {e}')
    for name in names:
        folder = folders[name]
        if args.quick:
            folder = quick_subset(folder, os.path.join(work, 'quick-data', name))
        for row in rows:
            for seed in seeds:
                if (name, row, seed) in done:
                    continue
                record(dict(dataset=name, row=row, seed=seed, quick=args.quick,
                            **run_row(row, folder, seed, work, args.quick)), runs, args.out)
    def chosen(r):
        return r['dataset'] in names and r['row'] in rows and r['seed'] in seeds and r['quick'] == args.quick
    if args.tta != 'none':
        tested = {n: os.path.join(work, 'quick-data', n) if args.quick else folders[n] for n in names}
        notes += add_tta(runs, chosen, tested, work, args.tta, args.out)
    wanted = [r for r in runs if chosen(r)]
    summary = summarize(wanted)
    print('\n' + table(summary, notes + verdicts(summary, wanted)))
    ablations = ablation(wanted)
    if ablations:
        print('\nAblations: test top-1 points against the defaults at the same seeds\n\n' + ablations)
    return summary


if __name__ == '__main__':
    main()
