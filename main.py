"""Train, evaluate and ship image classifiers from a folder of images.

    python main.py train                                   # no data yet: trains on the bundled digits demo
    python main.py train --train-data-root=./data/train --use-gpu --env=classifier
    python main.py val --load-path=checkpoints/<run>/best_model.pth
    python main.py testforacc --data-root=./data/test --batch-size=256 --load-path=checkpoints/<run>/best_model.pth
    python main.py help

Every command reads the same settings (config.py); `help` lists them with their defaults.
"""
import functools
import os
import sys
import time

import config

EXAMPLES = {
    'train': 'python main.py train --train-data-root=./data/train --use-gpu --env=classifier',
    'lr_find': 'python main.py lr_find --train-data-root=./data/train   (then train --lr=<suggested> or --lr=auto)',
    'val': 'python main.py val --load-path=checkpoints/<run>/best_model.pth',
    'testforacc': "python main.py testforacc --data-root=./data/test --batch-size=256 "
                  "--load-path='checkpoints/<run>/best_model.pth'",
    'predict': "python main.py predict --load-path=checkpoints/<run>/best_model.pth --data-root=./new_images "
               "--output=predictions.csv",
    'svm': 'python main.py svm --load-path=checkpoints/<run>/best_model.pth',
    'export': 'python main.py export --load-path=checkpoints/<run>/best_model.pth --format=all',
    'ensemble': 'python main.py ensemble --load-paths=[a.pth,b.pth,c.pth] --ensemble-weights=[1,1,1]',
    'analyze': 'python main.py analyze --data-root=data',
    'clean': 'python main.py clean --data-root=data --dry-run   (then without --dry-run; --undo puts all back)',
    'split': 'python main.py split --train-data-root=data/train --val-ratio=0.15',
    'pseudo': 'python main.py pseudo --load-path=checkpoints/<run>/best_model.pth --unlabeled-root=external/',
    'hard': 'python main.py hard --load-path=checkpoints/<run>/best_model.pth',
    'tune': 'python main.py tune --n-trials=20 --timeout=3600   (then: python main.py train '
            '--config=checkpoints/<tune>/best_config.json)',
    'help': 'python main.py help',
    'dashboard': 'python main.py dashboard --port=8097',
    'replay': 'python main.py replay --run=checkpoints/<run> --env=classifier',
    'report': 'python main.py report --run=checkpoints/<run>   (--data-root=./data/test adds a test section)',
    'explain': 'python main.py explain --load-path=checkpoints/<run>/best_model.pth --data-root=./new_images',
}


def train(**kwargs):
    """Train a model; checkpoints, config and metrics go to checkpoints/<run>/."""
    from utils.train import engine
    return engine.Run.of(engine.fit(config.parse(**kwargs)))


def load(path, **kwargs):
    """From Python: the model of a checkpoint or exported file `path` with its own preprocessing, as a predictor:
    `.classes`, `.predict(images)`, `.predict_proba(images)` (utils/evaluate/predictor.py); `kwargs` are runtime
    settings (batch_size, use_gpu, tta ...)."""
    from utils.evaluate.predictor import Predictor
    return Predictor(config.parse(load_path=os.fspath(path), **kwargs))


def lr_find(**kwargs):
    """Learning-rate range test: a short exponential lr sweep on the training data; prints the suggested --lr."""
    from utils.train import engine
    engine.fit(config.parse(**kwargs), find_lr_only=True)


def val(**kwargs):
    """Loss and accuracy of --load-path on the validation split (or on --data-root)."""
    from utils.evaluate import loop
    loop.evaluate_checkpoint(config.parse(**kwargs), 'val')


def testforacc(**kwargs):
    """Full report of --load-path on a labelled test folder: top-1/5, per-class P/R/F1, confusion CSV and PNG."""
    from utils.evaluate import loop, run_report
    loop.evaluate_checkpoint(config.parse(**kwargs), 'test', on_result=run_report.add_test)


def predict(**kwargs):
    """Classify every image under --data-root (flat or nested) with --load-path; writes a CSV of predictions."""
    from utils.evaluate import loop
    loop.predict(config.parse(**kwargs))


def svm(**kwargs):
    """Fit an SVM head on the penultimate features of --load-path; compare it with the softmax head."""
    from utils.evaluate import loop
    loop.fit_svm(config.parse(**kwargs))


def export(**kwargs):
    """Export --load-path to ONNX / TorchScript (--format): 0..1 images in, probabilities out, checked against PyTorch."""
    from utils.evaluate import export as exporter
    exporter.export(config.parse(**kwargs))


def ensemble(**kwargs):
    """Fuse --load-paths checkpoints: each member, soft and hard voting and stacking side by side."""
    from utils.evaluate import fusion
    fusion.ensemble(config.parse(**kwargs))


def analyze(**kwargs):
    """Report per split: class counts, sizes, formats, broken files, empty/missing classes, duplicates, leaks."""
    from utils.curate import analyze as report
    cfg, root = data_root(kwargs)
    result = report.analyze(root, cfg.near_dup_bits, cfg.near_dup_diff)
    print(report.format_summary(result))
    run_name = cfg.run_name or f'analyze-{time.strftime("%Y%m%d-%H%M%S")}'
    paths = report.write_report(result, os.path.join(cfg.checkpoint_dir, run_name))
    print(f'full report: {paths["report.md"]} (and report.json, problems.csv, files.csv, class_counts.csv)')
    if cfg.vis:
        from utils.dashboard.client import Visualizer
        report.plot_class_counts(result, Visualizer(cfg.env, cfg.vis_server, cfg.vis_port))


def clean(**kwargs):
    """Move flagged files (--clean-categories) to a quarantine beside the data; --dry-run, --undo."""
    from utils.curate import clean as quarantine
    cfg, root = data_root(kwargs)
    where = quarantine.quarantine_dir(root, cfg.quarantine_dir)
    if cfg.undo:
        restored = quarantine.undo(root, cfg.quarantine_dir)
        print(f'restored {len(restored)} file(s) from {where}')
        return
    moves = quarantine.clean(root, cfg.clean_categories, cfg.quarantine_dir, cfg.dry_run, cfg.near_dup_bits,
                             cfg.near_dup_diff)
    print(quarantine.format_moves(moves, where, cfg.dry_run))


def split(**kwargs):
    """Write a stratified, seeded train/val manifest of train_data_root (no file moves)."""
    from data import loaders, manifest
    cfg = loaders.resolve_roots(config.parse(**kwargs))
    rows = manifest.split_rows(cfg)
    out = manifest.write(manifest.default_split_path(cfg), rows, ('path', 'label', 'split'))
    n_val = sum(r['split'] == 'val' for r in rows)
    print(f'{len(rows) - n_val} train and {n_val} val images (seed {cfg.seed}) -> {out}; '
          f'train with --manifest={out}')


def pseudo(**kwargs):
    """Pseudo-label --unlabeled-root with --load-path through floor, per-class and cap thresholds."""
    from utils.curate import pseudo as labeller
    labeller.run(config.parse(**kwargs))


def hard(**kwargs):
    """List the validation / training images --load-path misclassifies (for --upsample-hard)."""
    from utils.curate import hard as examples
    examples.find(config.parse(**kwargs))


def tune(**kwargs):
    """Search the training recipe on the validation split with Optuna; writes best_config.json for train --config."""
    from utils.train import tune as search
    search.run(config.parse(**kwargs))


def data_root(kwargs):
    """(config, the folder analyze and clean work on): --data-root, else the folder above the data roots."""
    from data import loaders
    cfg = config.parse(**kwargs)
    if cfg.data_root:
        return cfg, cfg.data_root
    cfg = loaders.resolve_roots(cfg)
    roots = [r for r in (cfg.train_data_root, cfg.val_data_root, cfg.test_data_root) if os.path.isdir(r)]
    if not roots:
        raise config.UserError('no data found; give --data-root=FOLDER (train/val/test inside, or class folders)')
    return cfg, os.path.commonpath([os.path.abspath(r) for r in roots]) if len(roots) > 1 else roots[0]


def dashboard(port=None, host=None, **kwargs):
    """Start the visdom dashboard server (offline-safe, 127.0.0.1 by default) and print its URL; Ctrl-C stops it."""
    from utils.dashboard.server import serve
    cfg = config.parse(**kwargs)
    port = cfg.vis_port if port is None else config.coerce('vis_port', port, int)
    try:
        serve(port=port, host=cfg.vis_host if host is None else str(host), env_path=cfg.vis_env_path)
    except RuntimeError as e:  # npm missing, server crashed: say what to do in one line
        raise config.UserError(str(e)) from None


def replay(run='', **kwargs):
    """Push a run's recorded dashboard (checkpoints/<run>/visdom.log) to the visdom server."""
    from utils.dashboard.replay import replay_run
    replay_run(str(run), config.parse(**kwargs))


def report(run='', **kwargs):
    """Write checkpoints/<run>/report.html: curves, confusion, per-class table, mosaics, worst mistakes, Grad-CAM."""
    from utils.evaluate import run_report
    run_report.write(str(run), config.parse(**kwargs))


def explain(**kwargs):
    """Grad-CAM overlays of --load-path for the images in --data-root (a folder or files), with an HTML index."""
    from utils.evaluate import run_report
    run_report.explain(config.parse(**kwargs))


def help(**kwargs):
    """List the commands, and every setting with its default (and its choices, for those that name one)."""
    lines = ['usage: python main.py <command> [--setting=value ...]', '', 'commands:']
    for name in COMMANDS:
        lines.append(f'  {name:<11} {COMMANDS[name].__doc__.splitlines()[0]}')
        lines.append(f'  {"":<11}   e.g. {EXAMPLES[name]}')
    lines += ['', 'settings (--name=value; booleans also --name / --noname; --config=FILE reads them from a JSON file '
                  'such as a run\'s config.json, the command line on top):']
    groups, choices, auto = {}, config.choices(), config.takes_auto()  # each group once, in order of appearance
    for name, default, kind, text, grp in config.settings():
        what = ' | '.join(choices[name]) if name in choices else kind.__name__ + ' or auto' * (name in auto)
        what = 'one of: ' + what if name in choices else what
        groups.setdefault(grp, []).append(f'    --{config.flag(name)}={default!r}  ({what})  {text}')
    for grp, entries in groups.items():
        lines += [f'  [{grp}]'] + entries
    print('\n'.join(lines))


COMMANDS = {'train': train, 'lr_find': lr_find, 'val': val, 'testforacc': testforacc, 'predict': predict, 'svm': svm,
            'export': export, 'ensemble': ensemble, 'analyze': analyze, 'clean': clean, 'split': split,
            'pseudo': pseudo, 'hard': hard, 'dashboard': dashboard, 'replay': replay, 'report': report,
            'explain': explain, 'tune': tune, 'help': help}


def quote_values(argv):
    """Hand every --name=value to fire as a string literal, so config.parse coerces it by the setting's type:
    otherwise fire turns --env=0701 into the int 701. A boolean flag is spelled out the same way: --name is
    --name=True, --noname and --no-name are --name=False (fire reads --no-name as a setting '-name'), unless
    no_name is a setting itself (--no-verify)."""
    kinds = {name: kind for name, _, kind, _, _ in config.settings()} | {'config': str}
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split('=', 1)[0].replace('-', '_') if arg.startswith('--') else None
        negated = name[2:].lstrip('_') if name and name.startswith('no') and name not in kinds else None
        if name and '=' not in arg and kinds.get(name) is bool:
            out.append(f'--{name}=True')
        elif name and '=' not in arg and kinds.get(negated) is bool:
            out.append(f'--{negated}=False')
        elif name and '=' in arg:
            out.append(f'--{arg[2:].split("=", 1)[0]}={arg.split("=", 1)[1]!r}')
        elif name and kinds.get(name) not in (None, bool) and i + 1 < len(argv) and not argv[i + 1].startswith('--'):
            out += [arg, repr(argv[i + 1])]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def on_the_command_line(command):
    """`command` as fire runs it: what it returns is for Python callers (train's Run), not printed."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        command(*args, **kwargs)
    return run


def main(argv=None):
    import fire
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help'):
        argv = ['help']
    if argv[0] not in COMMANDS:
        print(f'error: unknown command {argv[0]!r}; choose one of: {", ".join(COMMANDS)}', file=sys.stderr)
        return 2
    if '--help' in argv[1:]:
        argv = ['help']
    try:
        fire.Fire({name: on_the_command_line(f) for name, f in COMMANDS.items()}, command=quote_values(argv),
                  name='main.py')
    except config.UserError as e:  # a mistake the user can fix: one line; anything else is a bug, with its traceback
        if os.environ.get('CLASSIFIER_DEBUG'):
            raise
        print(f'error: {e}', file=sys.stderr)
        return 2
    except config.Interrupted as e:  # SIGTERM / SIGINT during training: last.pth written, the resume command printed
        print(f'\n{e}', file=sys.stderr)
        return e.status
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print('\ninterrupted; resume a training run with --resume=checkpoints/<run>/last.pth', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
