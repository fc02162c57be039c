"""What would --patience=N have saved and cost on finished runs? Read from their metrics.jsonl, nothing trained.

    python benchmarks/patience.py RUN_DIR [RUN_DIR ...]      # e.g. the suite's runs: ~/suite/work/*-defaults-seed*
    python benchmarks/patience.py --patience=3,5,10 RUN_DIR ...

Early stopping does not change the schedule (it is planned over max_epoch), so a run with --patience=N is the
finished run up to the epoch it stops at, and its best_model.pth is the finished run's best checkpoint of those
epochs. Per N this prints, over the runs: the epochs trained (share of the full runs'), how many runs stop early,
the validation accuracy their best checkpoint loses against the full run's, and in how many runs best_model.pth
differs from the full run's (only there can the test accuracy differ: the full run's test_metrics.json is shown).
"""
import argparse
import json
import os


def rows_of(run_dir):
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f if line.strip()]


def stop_epoch(accs, patience):
    """The number of epochs a run of validation accuracies `accs` trains with --patience (utils/train/engine.py's
    rule: stop when the last `patience` epochs brought no improvement, never after the last epoch)."""
    best, best_epoch = -1.0, -1
    for epoch, acc in enumerate(accs):
        if acc > best:
            best, best_epoch = acc, epoch
        if patience and epoch - best_epoch >= patience and epoch + 1 < len(accs):
            return epoch + 1
    return len(accs)


def first_best(accs):
    return accs.index(max(accs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+', help='run directories holding metrics.jsonl')
    parser.add_argument('--patience', default='3,5,8,10', help='comma-separated values of --patience')
    args = parser.parse_args()
    runs = {os.path.basename(os.path.normpath(r)): rows_of(r) for r in args.runs}
    tests = {}
    for r in args.runs:
        path = os.path.join(r, 'test_metrics.json')
        if os.path.isfile(path):
            with open(path) as f:
                tests[os.path.basename(os.path.normpath(r))] = json.load(f).get('top1')
    print(f'{len(runs)} runs, {sum(len(v) for v in runs.values())} epochs in all\n')
    print('| --patience | epochs trained | runs stopped early | validation accuracy lost (mean / max) | '
          'best_model.pth differs |')
    print('|---|---|---|---|---|')
    for patience in [int(p) for p in args.patience.split(',')]:
        trained, stopped, lost, differs = 0, 0, [], []
        for name, rows in runs.items():
            accs = [r['val_acc'] for r in rows]
            n = stop_epoch(accs, patience)
            trained += n
            stopped += n < len(accs)
            lost.append(max(accs) - max(accs[:n]))
            if first_best(accs[:n]) != first_best(accs):
                differs.append(name)
        total = sum(len(v) for v in runs.values())
        print(f'| {patience} | {trained} of {total} ({100 * trained / total:.0f} %) | {stopped} of {len(runs)} | '
              f'{100 * sum(lost) / len(lost):.2f} / {100 * max(lost):.2f} points | {len(differs)} of {len(runs)}'
              + (f': {", ".join(differs)}' if differs else '') + ' |')
    print('\nper run: epochs, best validation epoch and accuracy, test top-1 of best_model.pth where recorded')
    for name, rows in runs.items():
        accs = [r['val_acc'] for r in rows]
        test = f', test {100 * tests[name]:.1f} %' if tests.get(name) is not None else ''
        print(f'  {name}: {len(accs)} epochs, best {100 * max(accs):.1f} % at epoch {first_best(accs) + 1}{test}')


if __name__ == '__main__':
    main()
