"""The learning-rate range test (Smith, 2017; fastai's lr_find) behind `python main.py lr_find` and `--lr=auto`.

The model trains for lr_find_steps steps -- the training step of `train` itself: its loader, augmentation, mixing,
loss and optimizer -- while the learning rate grows exponentially from lr_find_start to lr_find_end. The loss is
smoothed (an exponential moving average with bias correction) and the sweep stops once the smoothed loss exceeds 4x
its best. The weights and the optimizer state are then put back exactly as they were. Two suggestions are read from
the smoothed curve: `steep`, where it falls fastest against log(lr), and `valley`, fastai's default (the middle of
the longest stretch over which the loss keeps falling), which is the one used.
"""
import copy
import dataclasses
import itertools
import math
import os

import numpy as np

from config import UserError
from utils.io import progress, write_bytes, write_text
from utils.train.precision import Precision
from utils.train.step import Running, Trainer, train_mode, train_step
from utils.train.optim import Schedule, build_optimizer

BETA = 0.98  # smoothing of the loss, as fastai's
DIVERGED = 4.0  # the sweep stops when the smoothed loss exceeds this many times its best
SUGGESTION = 'valley'  # fastai's default suggestion


class NoDashboard:
    """train_step shows the first training batch on the run's dashboard; a sweep shows none."""

    def show_batch(self, images, labels):
        pass


def cycled(loader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def sweep(net, model, optimizer, loader, criterion, cfg, device, precision=None):
    """Train `net` (the module `model`, possibly wrapped) for cfg.lr_find_steps steps of train's own step, the
    learning rate of every parameter group growing exponentially from cfg.lr_find_start to cfg.lr_find_end (times
    the group's lr_scale); stop early when the smoothed loss diverges. The state_dicts of `model` and `optimizer`
    are restored afterwards, exactly. Returns {'lr', 'loss', 'smoothed': lists, one entry per step, 'diverged'}."""
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    steps, start, end = cfg.lr_find_steps, cfg.lr_find_start, cfg.lr_find_end
    step_cfg = dataclasses.replace(cfg, ema=False)  # an average of the sweep's weights is of no use
    precision = precision or Precision(None, device)
    trainer = Trainer(model, optimizer, Schedule(None, 'none'), step_cfg, precision=precision)
    out = {'lr': [], 'loss': [], 'smoothed': [], 'diverged': False}
    running, avg, best = Running(device), 0.0, math.inf
    train_mode(model)
    batches = progress(itertools.islice(cycled(loader), steps), 'lr_find', steps)
    try:
        for i, (images, labels, _) in enumerate(batches):
            if images is None or len(labels) < 2:  # as train_one_epoch: batch norm cannot train on one image
                continue
            lr = start * (end / start) ** (i / (steps - 1))
            for group in optimizer.param_groups:
                group['lr'] = lr * group.get('lr_scale', 1.0)
            train_step(net, images, labels, criterion, trainer, running, step_cfg, NoDashboard(), (i, steps, 0))
            loss = running.read()[2]
            avg = BETA * avg + (1 - BETA) * loss
            smoothed = avg / (1 - BETA ** (len(out['lr']) + 1))
            best = min(best, smoothed)
            for key, value in zip(('lr', 'loss', 'smoothed'), (lr, loss, smoothed)):
                out[key].append(value)
            if not math.isfinite(smoothed) or smoothed > DIVERGED * best:
                out['diverged'] = True
                break
    finally:
        batches.close()
        optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
    return out


def suggest(lrs, smoothed):
    """{'steep': lr where the smoothed loss falls fastest against log(lr), 'valley': fastai's valley}, both read
    from the curve without its first tenth and its last points (as fastai does), so both lie within `lrs`."""
    n = len(lrs)
    lo, hi = n // 10, n - min(5, n // 10)
    if hi - lo < 3:
        lo, hi = 0, n
    lrs, losses = np.asarray(lrs[lo:hi], dtype=float), np.nan_to_num(np.asarray(smoothed[lo:hi]), nan=np.inf)
    if len(lrs) < 2:
        return {'steep': float(lrs[0]), 'valley': float(lrs[0])}
    with np.errstate(invalid='ignore'):
        slopes = np.nan_to_num(np.diff(losses) / np.diff(np.log(lrs)), nan=np.inf)
    steep = float(lrs[int(np.argmin(slopes))])
    # valley: the longest strictly decreasing subsequence of the loss; take a point 1/2 of the way into it
    longest = np.ones(len(losses), dtype=int)
    for i in range(1, len(losses)):
        above = losses[:i] > losses[i]
        if above.any():
            longest[i] = longest[:i][above].max() + 1
    last = int(np.argmax(longest))
    first = last - longest[last] + 1
    third = (last - first) / 3
    valley = float(lrs[min(max(first + int(third) + int(third / 2), 0), len(lrs) - 1)])
    return {'steep': steep, 'valley': valley}


def plot_png(result, picks):
    """PNG bytes of the smoothed (and raw) loss against the learning rate, log x, both suggestions marked."""
    from matplotlib.figure import Figure
    from utils.evaluate.run_report import figure_png
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(result['lr'], result['loss'], color='0.75', lw=1, label='loss')
    ax.plot(result['lr'], result['smoothed'], lw=2, label='smoothed loss')
    for name, marker in (('valley', 'o'), ('steep', 's')):
        y = np.interp(np.log(picks[name]), np.log(result['lr']), result['smoothed'])
        tag = ' (the suggestion)' if name == SUGGESTION else ''
        ax.plot(picks[name], y, marker, ms=9, label=f'{name} {picks[name]:.3g}{tag}')
    finite = [v for v in result['smoothed'] if math.isfinite(v)]
    top = min(max(finite), 3 * finite[0])  # the diverging tail would flatten the rest of the curve
    ax.set(xscale='log', xlabel='learning rate', ylabel='training loss', title='learning-rate range test',
           ylim=(min(finite) * 0.95, top * 1.05))
    ax.legend()
    return figure_png(fig)


def write(result, picks, run_dir):
    """lr_find.csv (lr, loss, smoothed) and lr_find.png in `run_dir`, each written atomically."""
    rows = ''.join(f'{lr:.6g},{loss:.6g},{s:.6g}\n' for lr, loss, s in zip(result['lr'], result['loss'],
                                                                           result['smoothed']))
    write_text('lr,loss,smoothed\n' + rows, os.path.join(run_dir, 'lr_find.csv'))
    write_bytes(plot_png(result, picks), os.path.join(run_dir, 'lr_find.png'))


def show(result, picks, visualizer):
    """The dashboard window 'lr_find': the smoothed loss against the learning rate (log x), the suggestion named."""
    lrs, smoothed = np.asarray(result['lr']), np.asarray(result['smoothed'])
    keep = np.isfinite(smoothed)  # a NaN is no JSON number
    visualizer.call('line', Y=smoothed[keep], X=lrs[keep], win='lr_find',
                    opts=dict(title=f'lr_find: suggested lr {picks[SUGGESTION]:.3g} ({SUGGESTION}; steep '
                              f'{picks["steep"]:.3g})', xtype='log', xlabel='learning rate', ylabel='smoothed loss'))


def find(cfg, net, model, loader, criterion, device, precision, run_dir, dashboard):
    """The range test on the run `train` builds (its plan `cfg`, model, loader, loss; an optimizer built as train
    builds it), written to run_dir and shown on `dashboard` (a RunDashboard); returns (the suggested learning rate,
    the record of the sweep that the plan keeps as lr_find)."""
    sweep_cfg = dataclasses.replace(cfg, lr=cfg.lr_find_start)  # the optimizer's starting value; each step sets its own
    result = sweep(net, model, build_optimizer(model, sweep_cfg), loader, criterion, sweep_cfg, device, precision)
    if len(result['lr']) < 2:
        raise UserError(f'lr_find recorded {len(result["lr"])} step(s); it needs training batches of 2+ images (a '
                        f'smaller --batch-size) and a finite loss at --lr-find-start={cfg.lr_find_start}')
    picks = suggest(result['lr'], result['smoothed'])
    write(result, picks, run_dir)
    show(result, picks, dashboard.vis)
    use = '; --lr=auto trains with it' if cfg.lr == 'auto' else ''
    stop = f'stopped at {result["lr"][-1]:.3g}: the loss diverged' if result['diverged'] else 'no divergence'
    print(f'lr_find: swept {result["lr"][0]:.3g} .. {result["lr"][-1]:.3g} over {len(result["lr"])} steps ({stop}); '
          f'suggested lr {picks[SUGGESTION]:.3g} ({SUGGESTION}; steep {picks["steep"]:.3g}){use}; curve in '
          f'{os.path.join(run_dir, "lr_find.png")}')
    record = {'suggestion': SUGGESTION, **picks, 'steps': len(result['lr']), 'diverged': result['diverged'],
              'start': cfg.lr_find_start, 'end': cfg.lr_find_end}
    return picks[SUGGESTION], record
