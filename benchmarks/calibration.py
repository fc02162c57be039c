"""Does temperature scaling calibrate the toolkit's models on data it was not fitted on? Fitted on each run's
validation split, measured on its test split; nothing is trained.

    python benchmarks/calibration.py RUN_DIR [RUN_DIR ...]      # e.g. the suite's runs: ~/suite/work/*-seed[0-9]

For each run (a folder with best_model.pth and a config.json whose plan names its validation and test data): the
temperature fitted on the validation split (utils/evaluate/calibrate.py, as `train --calibrate=temperature` fits
it), and the expected calibration error (15 bins), negative log-likelihood and Brier score of best_model.pth on the
test split before and after; then the mean per dataset (the run folder's name up to '-defaults').
"""
import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import config  # noqa: E402
from data import loaders  # noqa: E402
from data.dataset import BadFileLog  # noqa: E402
from utils.evaluate import calibrate, loop  # noqa: E402
from utils.evaluate.metrics import calibration  # noqa: E402


def measure(run_dir):
    """{temperature, val / test calibration before and after, test top-1} of run_dir's best_model.pth."""
    cfg = config.parse(load_path=os.path.join(run_dir, 'best_model.pth'), num_workers=0, vis=False)
    model, plan, ckpt, device = loop.load_for_eval(cfg)
    plan = loaders.resolve_roots(plan, cfg.given)
    classes = ckpt['classes']
    _, val_set = loaders.build_train_val(plan, classes)
    test_set = loaders.eval_dataset(plan, plan.test_data_root, classes)
    found = {name: loop.evaluate(model, loaders.eval_loader(data, plan), torch.nn.CrossEntropyLoss(), device,
                                 BadFileLog(), name, plan) for name, data in (('val', val_set), ('test', test_set))}
    t, fitted = calibrate.fit(found['val']['probs'], found['val']['targets'])
    test = found['test']
    before = calibration(test['probs'], test['targets'])
    after = calibration(calibrate.scaled(test['probs'], t), test['targets'])
    return dict(temperature=t, val_ece=(fitted['ece_before'], fitted['ece_after']),
                test_ece=(before['ece'], after['ece']), test_nll=(before['nll'], after['nll']),
                test_brier=(before['brier'], after['brier']), test_top1=test['acc'], val_images=fitted['images'],
                test_images=len(test['targets']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+')
    args = parser.parse_args()
    results = {}
    for run in args.runs:
        results[os.path.basename(os.path.normpath(run))] = measure(run)
    print('\n| run | T | val ECE before -> after | test ECE before -> after | test NLL before -> after | '
          'test Brier before -> after | test top-1 |')
    print('|---|---|---|---|---|---|---|')
    for name, r in results.items():
        print(f'| {name} | {r["temperature"]:.3f} | {100 * r["val_ece"][0]:.2f} -> {100 * r["val_ece"][1]:.2f} % | '
              f'{100 * r["test_ece"][0]:.2f} -> {100 * r["test_ece"][1]:.2f} % | {r["test_nll"][0]:.4f} -> '
              f'{r["test_nll"][1]:.4f} | {r["test_brier"][0]:.4f} -> {r["test_brier"][1]:.4f} | '
              f'{100 * r["test_top1"]:.1f} % ({r["test_images"]}) |')
    print('\nmean per dataset (test):\n\n| dataset | runs | ECE before -> after | NLL before -> after |\n|---|---|---|---|')
    datasets = sorted({name.split('-defaults')[0] for name in results})
    for d in datasets:
        rs = [r for name, r in results.items() if name.split('-defaults')[0] == d]
        mean = lambda key, i: statistics.mean(r[key][i] for r in rs)  # noqa: E731
        print(f'| {d} | {len(rs)} | {100 * mean("test_ece", 0):.2f} -> {100 * mean("test_ece", 1):.2f} % | '
              f'{mean("test_nll", 0):.4f} -> {mean("test_nll", 1):.4f} |')


if __name__ == '__main__':
    main()
