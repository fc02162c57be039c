"""What the dashboard costs a training run: time per logged step and per epoch, with a live server, with no
server (calls only recorded in visdom.log), and with --vis=false.

    python benchmarks/dashboard_overhead.py            # digits demo validation split (216 images, 10 classes)
"""
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import config  # noqa: E402
from data import loaders  # noqa: E402
from utils.dashboard.server import free_port, start_server, stop_server  # noqa: E402
from utils.dashboard.windows import RunDashboard  # noqa: E402

STEPS, EPOCHS = 200, 5


def measure(cfg, train_set, val_set, run_dir):
    """Seconds per step() and per epoch() call (including the once-per-run windows in the first epoch)."""
    dash = RunDashboard(cfg, run_dir, train_set.classes)
    dash.start(train_set, val_set)
    dash.show_batch(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,)))
    start = time.perf_counter()
    for i in range(STEPS):
        dash.step(0, i, STEPS, 2.0 / (1 + i), 1e-3)
    step = (time.perf_counter() - start) / STEPS
    rng = np.random.default_rng(0)
    targets = np.asarray(val_set.targets)
    start = time.perf_counter()
    for e in range(EPOCHS):
        probs = rng.dirichlet(np.ones(10), size=len(targets))
        row = dict(epoch=e + 1, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5, lr=1e-3,
                   images_per_s=100.0)
        dash.epoch(row, {'probs': probs, 'targets': targets}, val_set)
    return step, (time.perf_counter() - start) / EPOCHS


def main():
    cfg = loaders.resolve_roots(config.parse(image_size=32))
    train_set, val_set = loaders.build_train_val(cfg)
    port, proc = free_port(), None
    try:
        proc = start_server(port=port, env_path=tempfile.mkdtemp(prefix='visdom-bench-'))
        for mode, extra in (('live server', dict(vis_port=port)), ('no server', dict(vis_port=free_port())),
                            ('--vis=false', dict(vis=False))):
            run_dir = tempfile.mkdtemp(prefix='dash-bench-')
            run_cfg = config.parse(image_size=32, env='bench', **extra)
            step, epoch = measure(run_cfg, train_set, val_set, run_dir)
            log = os.path.join(run_dir, 'visdom.log')
            size = os.path.getsize(log) / 1024 if os.path.exists(log) else 0
            print(f'{mode:<12}  {1000 * step:7.2f} ms per logged step  {1000 * epoch:7.1f} ms per epoch  '
                  f'visdom.log {size:6.0f} KiB')
    finally:
        stop_server(proc)


if __name__ == '__main__':
    main()
