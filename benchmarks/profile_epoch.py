"""Where an epoch's time goes: `engine.fit` with the defaults on the demo (optionally replicated) under
torch.profiler, split into the steady state of the training steps and the epoch boundary (the loader's start,
validation, the checkpoint writes, the dashboard).

    python benchmarks/profile_epoch.py --model=SqueezeNet --image-size=32
    python benchmarks/profile_epoch.py --device=cuda --model=ResNet34 --image-size=64 --batch-size=256

Prints, over the epochs after the first (which also holds the one-time costs), the seconds per epoch of each
phase and its share of the epoch, the operators with the most self time, and on CUDA the share of the training
steps' wall time the GPU spent in kernels. The Chrome trace (trace.json.gz: ui.perfetto.dev or
chrome://tracing) and the figures (profile.json) go to --out. The profiler records every Python call, which
slows Python-heavy phases more than others: read the shares as where to look, the throughput benchmark for speed.
"""
import dataclasses
import gzip
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.chdir(ROOT)

from torch.profiler import ProfilerActivity, profile  # noqa: E402

import config  # noqa: E402
from benchmarks.throughput import parser, replicated_manifest  # noqa: E402
from data import loaders  # noqa: E402
from utils.train import engine  # noqa: E402
from utils.dashboard.server import free_port  # noqa: E402

# phase -> (file, function) of the Python calls whose time it is; training phases are counted inside
# engine.train_one_epoch, boundary phases outside it
TRAINING = {
    'steps (step.train_step)': ('utils/train/step.py', 'train_step'),
    'waiting for batches': ('torch/utils/data/dataloader.py', '__next__'),
    'loader start': ('torch/utils/data/dataloader.py', '__iter__'),
    'loss / accuracy reads': ('utils/train/step.py', 'read'),
}
BOUNDARY = {
    'validation': ('utils/evaluate/loop.py', 'evaluate'),
    'checkpoint writes': ('utils/io.py', 'save_checkpoint'),
    'dashboard (epoch windows)': ('utils/dashboard/windows.py', 'epoch'),
}


def calls(events, file, function):
    """(start, end) in microseconds of the Python calls of `function` in `file`, outermost only."""
    spans = sorted((e['ts'], e['ts'] + e['dur']) for e in events if e.get('cat') == 'python_function'
                   and e['name'].endswith(f'): {function}') and e['name'].split('(')[0].endswith(file))
    out = []
    for start, end in spans:
        if not out or start >= out[-1][1]:
            out.append((start, end))
    return out


def within(spans, windows):
    """Microseconds of `spans` that fall inside `windows`."""
    return sum(min(end, w1) - max(start, w0) for w0, w1 in windows for start, end in spans if end > w0 and start < w1)


def summarise(trace, epochs):
    """(seconds per epoch, {phase: seconds per epoch}, GPU busy share of the training epochs or None) over the
    epochs after the first."""
    events = trace['traceEvents']
    training = calls(events, 'utils/train/engine.py', 'train_one_epoch')[1:]
    window = [(training[0][0], calls(events, 'utils/train/engine.py', 'fit')[0][1])]  # 2nd epoch's start to the end
    per = 1e6 * (epochs - 1)
    phases = {f'training: {name}': within(calls(events, *where), training) / per for name, where in TRAINING.items()}
    train_s = within(training, window) / per
    phases['training: the rest (loop, progress bar)'] = train_s - sum(phases.values())
    outside = within(window, window) / per - train_s
    boundary = {f'boundary: {name}': within(calls(events, *where), window) / per for name, where in BOUNDARY.items()}
    boundary['boundary: the rest'] = outside - sum(boundary.values())
    phases.update(boundary)
    kernels = [(e['ts'], e['ts'] + e['dur']) for e in events if e.get('cat') == 'kernel']
    busy = within(kernels, training) / within(training, training) if kernels else None
    return train_s + outside, phases, busy


def main(argv=None):
    p = parser(__doc__)
    p.add_argument('--epochs', type=int, default=3, help='epochs to profile (at least 2; the first is set apart)')
    p.add_argument('--replicate', type=int, default=1, help='the demo\'s training images K times (traces grow fast)')
    p.add_argument('--set', nargs='*', default=[], metavar='NAME=VALUE', help='any other toolkit setting')
    p.add_argument('--out', default='benchmarks/out/profile', help='folder for trace.json.gz and profile.json')
    args = p.parse_args(argv)
    if args.epochs < 2:
        raise SystemExit('--epochs must be at least 2: the first epoch holds the one-time costs')
    scratch = tempfile.TemporaryDirectory(prefix='profile-')
    extra = dict(kv.split('=', 1) for kv in args.set)
    cfg = config.parse(model=args.model, image_size=args.image_size, batch_size=args.batch_size,
                       use_gpu=args.device == 'cuda', max_epoch=args.epochs, checkpoint_dir=scratch.name,
                       run_name='profile', vis_port=free_port(), **extra)  # recorded, as with no server
    if args.replicate > 1:
        manifest = replicated_manifest(loaders.resolve_roots(cfg), args.replicate, scratch.name)
        cfg = dataclasses.replace(cfg, manifest=manifest, given=cfg.given | {'manifest'})
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == 'cuda' else [])
    with profile(activities=activities, with_stack=True) as prof:
        engine.fit(cfg)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(scratch.name, 'trace.json')
    prof.export_chrome_trace(path)
    with open(path) as f:
        trace = json.load(f)
    with open(path, 'rb') as src, gzip.open(os.path.join(args.out, 'trace.json.gz'), 'wb') as dst:
        shutil.copyfileobj(src, dst)
    per_epoch, phases, busy = summarise(trace, args.epochs)
    print(f'\n{cfg.model} at {cfg.image_size} px, batch {cfg.batch_size}, {args.device}, cache={cfg.cache}; '
          f'epochs 2-{args.epochs}: {per_epoch:.3f} s per epoch (profiled)')
    for name, seconds in phases.items():
        print(f'  {name:<44} {seconds:8.3f} s  {seconds / per_epoch:6.1%}')
    if busy is not None:
        print(f'GPU busy (kernels) during the training epochs: {busy:.1%} of their wall time')
    sort = 'self_cuda_time_total' if args.device == 'cuda' else 'self_cpu_time_total'
    print(prof.key_averages().table(sort_by=sort, row_limit=15))
    result = {'model': cfg.model, 'image_size': cfg.image_size, 'batch_size': cfg.batch_size, 'device': args.device,
              'cache': cfg.cache, 'seconds_per_epoch': per_epoch, 'phases': phases, 'gpu_busy': busy}
    with open(os.path.join(args.out, 'profile.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print('RESULT ' + json.dumps(result))
    return result


if __name__ == '__main__':
    main()
