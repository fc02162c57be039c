"""--tensorboard: the dashboard's scalars and pictures as TensorBoard event files, read back by TensorBoard's reader."""
import json
import math
import os

import numpy as np
import pytest

import config
from conftest import LEARNS, run_cli
from utils.train import engine

pytest.importorskip('tensorboard')


def read_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(run_dir, size_guidance={'scalars': 0, 'images': 0, 'tensors': 0})
    events.Reload()
    return events


def rows_of(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]


@pytest.fixture(scope='module')
def board_run(tmp_path_factory):
    from conftest import write_class_folders
    root = tmp_path_factory.mktemp('board')
    data = write_class_folders(root / 'learn', ['00000', '00001', '00002'], 20)
    cfg = config.parse(**dict(LEARNS, train_data_root=str(data), checkpoint_dir=str(root / 'ck'), run_name='r',
                              max_epoch=2, print_freq=2, tensorboard=True, html_report=False))
    return engine.fit(cfg)


def test_every_epoch_number_of_metrics_jsonl_is_a_scalar_with_its_value(board_run):
    events, rows = read_events(board_run), rows_of(board_run)
    for key in ('train_loss', 'train_acc', 'val_loss', 'val_acc', 'lr', 'seconds', 'images_per_s'):
        scalars = events.Scalars(f'epoch/{key}')
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_the_logged_steps_carry_raw_and_smoothed_loss_and_the_learning_rate(board_run):
    events = read_events(board_run)
    iters = math.ceil(51 / LEARNS['batch_size'])  # 51 training images: 7 batches, logged at 0, 2, 4, 6
    steps = [s.step for s in events.Scalars('step/loss')]
    assert steps == [e * iters + i for e in range(2) for i in range(0, iters, 2)]
    raw = [s.value for s in events.Scalars('step/loss')]
    smoothed = [s.value for s in events.Scalars('step/loss_smoothed')]
    assert smoothed[0] == raw[0] and smoothed[1] == pytest.approx(0.8 * raw[0] + 0.2 * raw[1], rel=1e-5)
    assert [s.step for s in events.Scalars('step/lr')] == steps and all(s.value > 0 for s in events.Scalars('step/lr'))


def test_per_class_validation_accuracy_averages_to_the_validation_accuracy(board_run):
    # the validation split is stratified: 3 images of each class, so the per-class mean is the accuracy
    events, rows = read_events(board_run), rows_of(board_run)
    per_class = [events.Scalars(f'val_acc_per_class/{c}')[-1].value for c in ('00000', '00001', '00002')]
    assert np.mean(per_class) == pytest.approx(rows[-1]['val_acc'], abs=1e-6)


def test_the_confusion_matrix_batch_grid_and_run_log_are_there(board_run):
    events = read_events(board_run)
    assert [i.step for i in events.Images('confusion matrix')] == [1, 2]
    assert len(events.Images('training images')) == 1 and events.Images('training images')[0].width > 32
    log = events.Tensors('run log/text_summary')[0].tensor_proto.string_val[0].decode()
    assert 'tensorboard = True' in log and "model = 'ResNet34'" in log


def test_replay_writes_the_events_of_a_run_trained_without_them_once(board_run, tmp_path):
    import shutil
    old = tmp_path / 'old'
    shutil.copytree(board_run, old, ignore=lambda d, names: [n for n in names if n.startswith('events.out')])
    out = run_cli('replay', f'--run={old}', '--tensorboard')
    assert out.returncode == 0, out.stderr
    events, rows = read_events(str(old)), rows_of(str(old))
    assert [s.value for s in events.Scalars('epoch/val_acc')] == pytest.approx([r['val_acc'] for r in rows])
    assert len(events.Scalars('step/lr')) == len(open(old / 'lr.csv').readlines())
    again = run_cli('replay', f'--run={old}', '--tensorboard')
    assert again.returncode == 2 and 'already has TensorBoard event files' in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
