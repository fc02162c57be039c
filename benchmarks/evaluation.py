"""Inference-side tricks side by side on the digits demo: three members of different architectures and input
sizes, soft and hard voting, stacking, test-time augmentation and the SVM head (test top-1 and macro-F1).

Run from the repository root:  python -m benchmarks.evaluation            (trains the members, then evaluates)
                               python -m benchmarks.evaluation --reuse    (evaluates the members already trained)
"""
import argparse
import contextlib
import io
import os
import time

import config
from utils.train import engine
from utils.evaluate import loop as inference
from utils.evaluate.fusion import ensemble

# name, settings: different architectures, one at another input size; small budgets for 2 CPU cores
MEMBERS = [
    # SqueezeNet pools 32 px down to 1x1 and then stalls from scratch: it gets 64 px and a gentler rate
    ('squeezenet', dict(model='SqueezeNet', image_size=64, max_epoch=10, lr=5e-4)),
    ('resnet34', dict(model='ResNet34', image_size=32, max_epoch=4)),
    ('alexnet', dict(model='AlexNet', image_size=32, max_epoch=8, lr=3e-4)),
]
TTAS = ('five_crop', 'multiscale')  # flips would turn digits into other shapes


def quiet(fn, *args, **kwargs):
    """Run fn with its printing (per-class tables, progress) kept out of the way; return its result."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default='checkpoints/evaluation-benchmark', help='where the members are trained')
    ap.add_argument('--reuse', action='store_true', help='do not train; use the members already in --out')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    from benchmarks.tricks import BASELINE
    # The members train with the book's recipe (docs/evaluation.md's figures were taken with it), not today's defaults.
    common = dict(BASELINE, checkpoint_dir=args.out, vis=False, num_workers=0, batch_size=64, seed=args.seed)

    paths = {}
    for name, settings in MEMBERS:
        paths[name] = os.path.join(args.out, name, 'best_model.pth')
        if args.reuse and os.path.isfile(paths[name]):
            continue
        start = time.time()
        quiet(engine.fit, config.parse(**{**common, **settings, 'run_name': name}))
        print(f'trained {name} ({settings}) in {time.time() - start:.0f} s')

    rows = []
    for name, settings in MEMBERS:
        label = f'{settings["model"]} {settings["image_size"]}px'
        for tta in TTAS:
            s = quiet(inference.evaluate_checkpoint, config.parse(load_path=paths[name], num_workers=0, tta=tta), 'test')
            rows.append((f'{label} + TTA {tta}', s['top1'], s['macro']['f1']))
        svm = quiet(inference.fit_svm, config.parse(load_path=paths[name], num_workers=0))
        rows.append((f'{label} + SVM head ({svm["kind"]}, C={svm["C"]:g})', svm['test']['svm_top1'],
                     svm['test']['svm_macro_f1']))
    fused = quiet(ensemble, config.parse(load_paths=[paths[n] for n, _ in MEMBERS], num_workers=0))
    members = [r for r in fused if r['method'].startswith('member')]
    table = [(r['method'].replace('member ', ''), r['test_top1'], r['test_macro_f1']) for r in members]
    table += rows
    table += [(r['method'], r['test_top1'], r['test_macro_f1']) for r in fused if r not in members]

    width = max(len(t[0]) for t in table)
    print(f'\n| {"method":<{width}} | test top-1 | test macro-F1 |\n|{"-" * (width + 2)}|-----------:|--------------:|')
    for method, acc, f1 in table:
        print(f'| {method:<{width}} | {100 * acc:>9.2f}% | {100 * f1:>12.2f}% |')
    best = max(r['test_top1'] for r in members)
    soft = next(r['test_top1'] for r in fused if r['method'].startswith('soft vote'))
    print(f'\nsoft vote {100 * soft:.2f}% vs best member {100 * best:.2f}%: '
          + ('soft vote >= best member' if soft >= best else 'soft vote BELOW the best member'))


if __name__ == '__main__':
    main()
