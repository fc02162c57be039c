"""Train, evaluate and ship image classifiers from a folder of images.

    python main.py train                                   # no data yet: trains on the bundled digits demo
    python main.py train --train-data-root=./data/train --use-gpu --env=classifier
    python main.py val --load-path=checkpoints/<run>/best_model.pth
    python main.py testforacc --data-root=./data/test --batch-size=256 --load-path=checkpoints/<run>/best_model.pth
    python main.py help

Every command reads the same settings (config.py); `help` lists them with their defaults.
"""
import os
import sys

import config

EXAMPLES = {
    'train': 'python main.py train --train-data-root=./data/train --use-gpu --env=classifier',
    'val': 'python main.py val --load-path=checkpoints/<run>/best_model.pth',
    'testforacc': "python main.py testforacc --data-root=./data/test --batch-size=256 "
                  "--load-path='checkpoints/<run>/best_model.pth'",
    'help': 'python main.py help',
}


def train(**kwargs):
    """Train a model; checkpoints, config and metrics go to checkpoints/<run>/."""
    from utils import engine
    engine.fit(config.parse(**kwargs))


def val(**kwargs):
    """Loss and accuracy of --load-path on the validation split (or on --data-root)."""
    from utils import engine
    engine.evaluate_checkpoint(config.parse(**kwargs), 'val')


def testforacc(**kwargs):
    """Top-1 / top-5 accuracy, per-class table and confusion CSV of --load-path on a labelled test folder."""
    from utils import engine
    engine.evaluate_checkpoint(config.parse(**kwargs), 'test')


def help(**kwargs):
    """List the commands, every setting with its default, and the registered models."""
    import models
    lines = ['usage: python main.py <command> [--setting=value ...]', '', 'commands:']
    for name in COMMANDS:
        lines.append(f'  {name:<11} {COMMANDS[name].__doc__.splitlines()[0]}')
        lines.append(f'  {"":<11}   e.g. {EXAMPLES[name]}')
    group = None
    lines += ['', 'settings (--name=value; booleans also --name / --noname):']
    for name, default, kind, text, grp in config.settings():
        if grp != group:
            group = grp
            lines.append(f'  [{grp}]')
        lines.append(f'    --{config.flag(name)}={default!r}  ({kind.__name__})  {text}')
    lines += ['', 'models: ' + ', '.join(models.list_models()) + f', {models.TIMM_PREFIX}<any timm model name>']
    print('\n'.join(lines))


COMMANDS = {'train': train, 'val': val, 'testforacc': testforacc, 'help': help}


def quote_values(argv):
    """Hand every --name=value to fire as a string literal, so config.parse coerces it by the setting's type:
    otherwise fire turns --env=0701 into the int 701."""
    kinds = {name: kind for name, _, kind, _, _ in config.settings()}
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split('=', 1)[0].replace('-', '_') if arg.startswith('--') else None
        if name and '=' in arg:
            out.append(f'--{arg[2:].split("=", 1)[0]}={arg.split("=", 1)[1]!r}')
        elif name and kinds.get(name) not in (None, bool) and i + 1 < len(argv) and not argv[i + 1].startswith('--'):
            out += [arg, repr(argv[i + 1])]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


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
        fire.Fire(COMMANDS, command=quote_values(argv), name='main.py')
    except ValueError as e:  # bad input the user can fix: one line, no traceback
        if os.environ.get('CLASSIFIER_DEBUG'):
            raise
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\ninterrupted; resume a training run with --resume=checkpoints/<run>/last.pth', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
