"""Run directories and what a crash, a reused name, another model or a full / read-only disk leaves in them."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import config
import models
from benchmarks import faults
from conftest import FAST, ROOT, run_cli, write_class_folders
from utils import io as checkpoint
from utils.train import engine

ARGS = ['--model=SqueezeNet', '--image-size=32', '--max-epoch=2', '--batch-size=8', '--num-workers=0', '--vis=false',
        '--ema']


def snapshot(folder):
    return {name: (folder / name).read_bytes() for name in os.listdir(folder)}


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run (with EMA) and the sequence of its writes, as the kill hook counts them."""
    work = tmp_path_factory.mktemp('runs')
    write_class_folders(work / 'data' / 'train', ['a', 'b', 'c'], 10)
    args = [f'--train-data-root={work / "data" / "train"}', *ARGS]
    res = faults.train([f'--checkpoint-dir={work / "runs"}', '--run-name=ref', *args], work, log=str(work / 'log'))
    assert res.returncode == 0, res.stderr[-2000:]
    points = faults.kill_points((work / 'log').read_text().splitlines())
    return {'work': work, 'args': args, 'dir': work / 'runs' / 'ref',
            'points': {what: (at, mode) for at, mode, what in points}}


@pytest.mark.parametrize('point', ['epoch 2: trained and validated, before last.pth',
                                   'epoch 1: after last.pth, before its metrics row',
                                   'epoch 1: after its metrics row, before best_model.pth',
                                   'epoch 1: best_model.pth complete in its temporary, not renamed'])
def test_a_run_killed_at_a_write_resumes_to_the_files_of_an_uninterrupted_run(reference, point):
    work, at = reference['work'], reference['points'][point]
    name = f'k{at[0]}'
    res = faults.train([f'--checkpoint-dir={work / "runs"}', f'--run-name={name}', *reference['args']], work, *at)
    assert res.returncode == -9, res.stderr[-2000:]
    run_dir = work / 'runs' / name
    res = faults.train([f'--resume={run_dir / "last.pth"}'], work)
    assert res.returncode == 0, res.stderr[-2000:]
    # no temporaries, one metrics row per epoch and one lr.csv row per step, best_metric of both best files as in
    # last.pth, and every weight equal to the uninterrupted run's
    assert faults.check_run(run_dir, reference['dir']) == []


def test_the_checkpoint_size_estimate_from_the_registry_matches_a_real_last_pth(reference):
    stem = json.load(open(reference['dir'] / 'config.json'))['used']['stem']  # auto made concrete: small at 32 px
    size = checkpoint.estimated_size(models.parameter_count('SqueezeNet', 3, stem=stem), ema=True)
    assert abs(size - os.path.getsize(reference['dir'] / 'last.pth')) < 0.02 * size


def test_a_reused_run_name_is_refused_and_the_old_run_left_as_it_was(reference):
    before = snapshot(reference['dir'])
    res = run_cli('train', f'--checkpoint-dir={reference["dir"].parent}', '--run-name=ref', *reference['args'])
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    last = reference['dir'] / 'last.pth'
    assert res.stderr.strip().splitlines() == [f'error: {reference["dir"]} already holds another run; resume it with '
                                               f'--resume={last}, or give a new --run-name']
    assert snapshot(reference['dir']) == before


def test_resume_with_another_model_is_one_line_and_writes_nothing(reference):
    before = snapshot(reference['dir'])
    res = run_cli('train', f'--resume={reference["dir"] / "last.pth"}', '--model=AlexNet', '--max-epoch=3')
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert 'trained with --model=SqueezeNet; --model=AlexNet contradicts it' in res.stderr
    assert snapshot(reference['dir']) == before


def test_runs_started_in_the_same_second_get_a_directory_each(tmp_path):
    cfg = config.parse(checkpoint_dir=str(tmp_path), model='SqueezeNet')
    now = time.time()  # runs that started in each of the next seconds already hold these names
    taken = [tmp_path / time.strftime('squeezenet-%Y%m%d-%H%M%S', time.localtime(now + s)) for s in range(10)]
    for folder in taken:
        folder.mkdir()
        (folder / 'metrics.jsonl').write_text('{"epoch": 1}\n')
    made = [engine.make_run_dir(cfg) for _ in range(2)]
    assert len(set(made)) == 2 and all(os.listdir(d) == [] for d in made)
    assert all(os.path.dirname(d) == str(tmp_path) and os.path.basename(d).startswith('squeezenet-') for d in made)
    assert all((folder / 'metrics.jsonl').read_text() == '{"epoch": 1}\n' for folder in taken)


@pytest.fixture
def tmpfs(tmp_path):
    """mount_tmpfs(options) -> a folder on its own small file system (skipped where mounting is not permitted)."""
    mounted = []

    def mount(options):
        folder = faults.mount_tmpfs(tmp_path / f'fs{len(mounted)}', options)
        if folder is None:
            pytest.skip('mounting a tmpfs needs root')
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        subprocess.run(['umount', str(folder)], check=True)


def test_a_read_only_checkpoint_dir_is_one_line_before_any_work(tiny_data, tmpfs):
    folder = tmpfs('ro,size=1m')
    res = run_cli('train', f'--train-data-root={tiny_data / "train"}', f'--checkpoint-dir={folder}',
                  *[f'--{k.replace("_", "-")}={v}' for k, v in FAST.items()])
    assert res.returncode == 2 and 'settings:' not in res.stdout
    assert res.stderr.strip().splitlines() == [f'error: cannot write in {folder} (read-only, not a folder, or not '
                                               f'yours); give a writable --checkpoint-dir']


def test_a_disk_without_room_for_the_checkpoints_is_refused_before_the_run_starts(tiny_data, tmpfs):
    folder = tmpfs('size=2m')
    cfg = config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(folder / 'runs'), **FAST)
    with pytest.raises(config.UserError, match=f'^{re.escape(str(folder))} has 2.0 MiB free, but this run needs '):
        engine.fit(cfg)
    assert os.listdir(folder) == []


def test_a_save_that_fills_the_disk_names_the_folder_and_keeps_the_previous_file(tmpfs):
    folder = tmpfs('size=1m')
    path = folder / 'last.pth'
    checkpoint.save_checkpoint({'model': torch.ones(1000)}, path)
    where = re.escape(str(folder))
    with pytest.raises(config.UserError, match=rf'^could not write {where}/last.pth \(.* MiB free in {where}\)'):
        checkpoint.save_checkpoint({'model': torch.ones(2 ** 19)}, path)  # 2 MiB
    assert torch.equal(torch.load(path, weights_only=True)['model'], torch.ones(1000))
    assert os.listdir(folder) == ['last.pth']


def test_resume_auto_starts_the_named_run_then_continues_it_after_an_interruption(tiny_data, tmp_path, capsys):
    settings = dict(FAST, train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path / 'ck'),
                    run_name='job', resume='auto', max_epoch=2, html_report=False)

    def preempted(epoch, row, plan):  # the scheduler's signal after the first epoch
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.fit(config.parse(**settings), on_epoch=preempted)
    assert 'no ' in capsys.readouterr().out.split('resume auto: ')[1].split('\n')[0]
    run_dir = tmp_path / 'ck' / 'job'
    assert len((run_dir / 'metrics.jsonl').read_text().splitlines()) == 1
    assert engine.fit(config.parse(**settings)) == str(run_dir)  # the same command line, restarted
    assert f'resume auto: continuing {run_dir / "last.pth"}' in capsys.readouterr().out
    rows = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows] == [1, 2] and os.listdir(tmp_path / 'ck') == ['job']


def test_resume_auto_without_a_run_name_is_one_line(tmp_path):
    out = run_cli('train', '--resume=auto', f'--checkpoint-dir={tmp_path}')
    assert out.returncode == 2 and '--resume=auto finds the run by its name: give --run-name' in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not os.listdir(tmp_path)


@pytest.fixture(scope='module')
def long_epochs(tmp_path_factory):
    """An uninterrupted 2-epoch run (with EMA) of 11 steps an epoch, to interrupt within its epochs."""
    work = tmp_path_factory.mktemp('sig')
    write_class_folders(work / 'data' / 'train', ['a', 'b', 'c'], 16)
    args = [f'--train-data-root={work / "data" / "train"}', *ARGS, '--batch-size=4']
    res = faults.train([f'--checkpoint-dir={work / "runs"}', '--run-name=ref', *args], work)
    assert res.returncode == 0, res.stderr[-2000:]
    return {'work': work, 'args': args, 'dir': work / 'runs' / 'ref'}


def start_and_signal(long_epochs, name, steps, signals, extra=()):
    """Start the run `name`, send `signals` (one after another) once lr.csv has `steps` rows; (process, stdout,
    stderr) when it ended."""
    work = long_epochs['work']
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), 'train', f'--checkpoint-dir={work / "runs"}',
                             f'--run-name={name}', *long_epochs['args'], *extra], cwd=work, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    lr = work / 'runs' / name / 'lr.csv'
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and (not lr.exists() or
                                                              len(lr.read_text().splitlines()) < steps):
        time.sleep(0.01)
    for s in signals:
        proc.send_signal(s)
    out, err = proc.communicate(timeout=240)
    return proc, out, err


@pytest.mark.parametrize('steps, signals', [(3, [signal.SIGTERM, signal.SIGTERM]), (15, [signal.SIGINT])])
def test_a_signal_within_an_epoch_writes_last_pth_there_and_the_resumed_run_ends_with_the_same_weights(
        long_epochs, steps, signals):
    name = f'sig{steps}'
    proc, out, err = start_and_signal(long_epochs, name, steps, signals)
    run_dir = long_epochs['work'] / 'runs' / name
    assert proc.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[signals[0]], err[-2000:]
    last = torch.load(run_dir / 'last.pth', weights_only=True)
    assert 'mid_epoch' in last, 'the run ended before the signal: make its epochs longer'
    assert last['mid_epoch']['epoch'] == steps // 11 and last['ema_step'] >= steps
    assert err.strip().splitlines()[-1].endswith(f'Continue it with: python main.py train --resume={run_dir / "last.pth"}')
    assert 'Traceback' not in err
    res = run_cli('train', f'--resume={run_dir / "last.pth"}', cwd=long_epochs['work'])
    assert res.returncode == 0, res.stderr[-2000:]
    assert f'after batch {last["mid_epoch"]["batch"]}' in res.stdout
    # every weight, the EMA, each metrics row (but its seconds) and every lr.csv row equal the uninterrupted run's
    assert faults.check_run(run_dir, long_epochs['dir']) == []


def test_checkpoint_every_lets_a_run_killed_without_a_signal_resume_within_its_epoch(long_epochs):
    proc, _, err = start_and_signal(long_epochs, 'every', 16, [signal.SIGKILL], ['--checkpoint-every=3'])
    assert proc.returncode == -9, err[-2000:]
    run_dir = long_epochs['work'] / 'runs' / 'every'
    last = torch.load(run_dir / 'last.pth', weights_only=True)
    assert last['mid_epoch']['epoch'] == 1 and last['ema_step'] % 3 == 0
    res = run_cli('train', f'--resume={run_dir / "last.pth"}', cwd=long_epochs['work'])
    assert res.returncode == 0, res.stderr[-2000:]
    assert faults.check_run(run_dir, long_epochs['dir']) == []
