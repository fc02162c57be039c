"""lr_find: the learning-rate range test, its files, and --lr=auto."""
import copy
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import config
import main
import models
from conftest import FAST, plan_for, run_cli
from data import loaders
from utils import io as checkpoint
from data import cache
from utils.train import step as tricks
from utils.train.optim import build_optimizer
from utils.train import lr_find

CLI = [f'--{config.flag(k)}={v}' for k, v in FAST.items()]


def sweep_parts(train_root, **settings):
    """The model, optimizer, loader and loss of a tiny SqueezeNet run, built with train's own builders."""
    cfg = plan_for(**FAST, train_data_root=str(train_root), normalize='imagenet', **settings)
    train_set, _ = loaders.build_train_val(cfg)
    loader = loaders.train_loader(train_set, cfg, None, torch.Generator().manual_seed(0))
    model = models.build(cfg.model, len(train_set.classes))
    criterion = tricks.build_criterion(cfg, train_set.targets, len(train_set.classes))
    return cfg, model, build_optimizer(model, cfg), loader, criterion


def same_bits(a, b):
    """True when two state_dicts (nested dicts, lists, tensors, numbers) are identical, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and a.detach().cpu().numpy().tobytes() == b.detach().cpu().numpy().tobytes())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_bits(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b))
    return a == b


def test_the_sweep_restores_the_weights_and_the_optimizer_state_bit_for_bit(tiny_data):
    cfg, model, optimizer, loader, criterion = sweep_parts(tiny_data / 'train', lr_find_steps=20, lr_find_end=1e6)
    images, labels, _ = next(iter(loader))  # one ordinary step: the optimizer holds moments and a step count
    criterion(model(cache.finish_batch(images, torch.device('cpu'), cfg, True)), labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    before = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    assert before[1]['state']
    result = lr_find.sweep(model, model, optimizer, loader, criterion, cfg, torch.device('cpu'), None)
    assert result['diverged']  # the weights were wrecked (NaN) on the way
    assert same_bits(model.state_dict(), before[0]) and same_bits(optimizer.state_dict(), before[1])


def test_a_diverging_sweep_stops_early(tiny_data):
    cfg, model, optimizer, loader, criterion = sweep_parts(tiny_data / 'train', lr_find_steps=40, lr_find_end=1e9)
    result = lr_find.sweep(model, model, optimizer, loader, criterion, cfg, torch.device('cpu'), None)
    smoothed = np.array(result['smoothed'])
    best = np.minimum.accumulate(np.nan_to_num(smoothed, nan=np.inf))  # the best so far, at each step
    assert result['diverged'] and len(smoothed) < 40
    assert not np.isfinite(smoothed[-1]) or smoothed[-1] > lr_find.DIVERGED * best[-1]
    assert np.all(smoothed[:-1] <= lr_find.DIVERGED * best[:-1])  # it stopped at the first such step


LRS = np.logspace(-7, 1, 100)
X = np.log10(LRS)


@pytest.mark.parametrize('losses', [
    2 - np.tanh(X + 3) + 0.5 * np.exp(2 * (X + 0.5)),  # falls fastest at 1e-3, turns up near 0.1
    1 + 0.1 * np.exp(X),  # only rises
    np.full(100, 1.1),  # flat: a model that learns nothing
    np.r_[np.linspace(2, 1, 60), np.full(40, np.nan)],  # diverged into NaN
])
def test_the_suggestions_fall_inside_the_swept_range(losses):
    for n in (100, 12, 3, 2):
        picks = lr_find.suggest(list(LRS[:n]), list(losses[:n]))
        assert LRS[0] <= picks['steep'] <= LRS[n - 1] and LRS[0] <= picks['valley'] <= LRS[n - 1], (n, picks)


def test_steep_is_the_fastest_descent_and_the_valley_lies_on_the_way_down():
    losses = 2 - np.tanh(X + 3) + 0.5 * np.exp(2 * (X + 0.5))
    picks = lr_find.suggest(list(LRS), list(losses))
    assert abs(np.log10(picks['steep']) + 3) < 0.1  # one grid step of 10^0.08
    assert LRS[10] < picks['valley'] < LRS[np.argmin(losses)]


def only_run(root):
    runs = list((root / 'checkpoints').iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_lr_find_writes_its_curve_plot_and_dashboard_window_in_a_run_directory(tiny_data):
    # no visdom server on port 9: the dashboard's calls are recorded in the run's visdom.log
    args = [a for a in CLI if not a.startswith('--vis=')] + ['--vis=true', '--vis-port=9']
    res = run_cli('lr_find', *args, '--lr-find-steps=12', '--lr-find-end=1', cwd=tiny_data.parent)
    assert res.returncode == 0, res.stderr
    run = only_run(tiny_data.parent)
    with open(run / 'lr_find.csv') as f:
        rows = list(csv.DictReader(f))
    lrs = np.array([float(r['lr']) for r in rows])
    assert list(rows[0]) == ['lr', 'loss', 'smoothed'] and len(rows) == 12  # 1e-7 .. 1 does not diverge here
    assert lrs[0] == pytest.approx(1e-7) and lrs[-1] == pytest.approx(1)
    assert np.allclose(lrs[1:] / lrs[:-1], lrs[1] / lrs[0])  # exponential
    assert Image.open(run / 'lr_find.png').format == 'PNG'
    record = json.loads((run / 'config.json').read_text())['used']['lr_find']
    line = next(line for line in res.stdout.splitlines() if line.startswith('lr_find: swept'))
    assert f'suggested lr {record["valley"]:.3g} (valley; steep {record["steep"]:.3g})' in line
    assert lrs[0] <= record['valley'] <= lrs[-1]
    assert not (run / 'last.pth').exists()  # a range test, not a training run
    window = [json.loads(line) for line in (run / 'visdom.log').read_text().splitlines() if '"lr_find"' in line]
    assert len(window) == 1 and window[0][1]['layout']['xaxis']['type'] == 'log'


def test_lr_auto_trains_with_the_found_lr_and_records_it(tiny_data):
    common = [*CLI, '--lr-find-steps=10', '--lr-find-end=1', '--scheduler=none', '--nohtml-report']
    res = run_cli('train', *common, '--lr=auto', '--run-name=auto', cwd=tiny_data.parent)
    assert res.returncode == 0, res.stderr
    run = tiny_data.parent / 'checkpoints' / 'auto'
    stored = json.loads((run / 'config.json').read_text())['used']
    assert stored['lr'] == stored['lr_find']['valley'] and 1e-7 <= stored['lr'] <= 1
    assert (run / 'lr_find.csv').is_file()
    steps = (run / 'lr.csv').read_text().splitlines()
    assert steps and all(float(line.split(',')[2]) == pytest.approx(stored['lr'], rel=1e-5) for line in steps)
    assert checkpoint.load_checkpoint(run / 'last.pth')['plan']['lr'] == stored['lr']
    # the sweep leaves no trace in the training: the same run as one given that lr as a number
    res = run_cli('train', *common, f'--lr={stored["lr"]!r}', '--run-name=number', cwd=tiny_data.parent)
    assert res.returncode == 0, res.stderr
    metrics = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    again = [json.loads(line) for line in (run.parent / 'number' / 'metrics.jsonl').read_text().splitlines()]
    drop = ('seconds', 'images_per_s')
    assert [{k: v for k, v in r.items() if k not in drop} for r in metrics] == \
        [{k: v for k, v in r.items() if k not in drop} for r in again]


@pytest.mark.parametrize('args, message', [
    (['--lr=bogus'], "error: --lr='bogus' is not a valid float or auto"),
    (['--lr=auto', '--resume=checkpoints/x/last.pth'], 'error: --lr=auto finds the learning rate before a run'),
    (['--lr-find-end=1e-8'], 'error: lr_find sweeps from --lr-find-start up to a larger --lr-find-end'),
])
def test_a_bad_lr_setting_stops_with_one_line_before_anything_is_written(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main.main(['train', *args, '--vis=false']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(message)
    assert list(tmp_path.iterdir()) == []
