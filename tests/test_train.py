"""End-to-end: the commands as a user types them, on real image folders."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import config
from conftest import FAST, LEARNS, ROOT, run_cli, write_class_folders
from utils.train import engine


def fast_args(**extra):
    return [f'--{k.replace("_", "-")}={v}' for k, v in {**FAST, **extra}.items()]


def test_one_epoch_learns_and_writes_both_checkpoints_config_classes_and_metrics(learnable_data, tmp_path):
    cfg = config.parse(train_data_root=str(learnable_data), checkpoint_dir=str(tmp_path / 'ck'), run_name='r',
                       **LEARNS)
    run_dir = engine.fit(cfg)
    names = set(os.listdir(run_dir))
    assert {'best_model.pth', 'last.pth', 'config.json', 'classes.json', 'metrics.jsonl'} <= names
    ckpt = torch.load(os.path.join(run_dir, 'last.pth'), weights_only=True)
    assert ckpt['model_name'] == 'ResNet34' and ckpt['classes'] == ['00000', '00001', '00002']
    assert ckpt['epoch'] == 0 and ckpt['num_classes'] == 3 and 'optimizer' in ckpt and 'scheduler' in ckpt
    assert json.load(open(os.path.join(run_dir, 'config.json')))['used']['image_size'] == 32
    rows = [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]
    assert len(rows) == 1 and rows[0]['val_acc'] >= 0.75  # chance is 1/3; this run gets 9 of 9 right


def test_max_epoch_auto_is_resolved_from_the_training_set_and_recorded(tiny_data, tmp_path, monkeypatch, capsys):
    # 30 training images; the rule's constants scaled down so that auto means 3 epochs here (18,000 images and
    # 15..100 epochs make it 100 epochs of this tiny set)
    monkeypatch.setattr(config, 'AUTO_IMAGES', 72)
    monkeypatch.setattr(config, 'AUTO_EPOCHS', (1, 5))
    cfg = config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path), run_name='r',
                       **{**FAST, 'max_epoch': 0})
    run_dir = engine.fit(cfg)
    assert 'max_epoch: auto = 3 epochs for 24 training images' in capsys.readouterr().out  # 6 of 30 validate
    assert json.load(open(os.path.join(run_dir, 'config.json')))['used']['max_epoch'] == 3
    assert len(open(os.path.join(run_dir, 'metrics.jsonl')).readlines()) == 3


def test_same_seed_same_data_gives_the_same_metrics(tiny_data, tmp_path):
    rows = []
    for name in ('a', 'b'):
        cfg = config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path),
                           run_name=name, **{**FAST, 'max_epoch': 2})
        rows.append(open(os.path.join(engine.fit(cfg), 'metrics.jsonl')).read())
    strip = lambda text: [{k: v for k, v in json.loads(l).items() if k not in ('seconds', 'images_per_s')}
                          for l in text.splitlines()]
    assert strip(rows[0]) == strip(rows[1])


def test_readme_commands_train_then_testforacc_on_a_traffic_sign_layout(tiny_data, tmp_path):
    work = tiny_data.parent
    res = run_cli('train', '--train-data-root=./data/train', '--use-gpu', '--env=classifier',
                  '--run-name=signs', *fast_args(), cwd=work)
    assert res.returncode == 0, res.stderr[-2000:]
    if not torch.cuda.is_available():
        assert res.stdout.count('CUDA is not available') == 1
    best = work / 'checkpoints' / 'signs' / 'best_model.pth'
    assert best.exists() and (work / 'checkpoints' / 'signs' / 'last.pth').exists()
    assert "env = 'classifier'" in res.stdout  # the effective config is printed

    res = run_cli('testforacc', '--data-root=./data/test', '--batch-size=256', f"--load-path={best}", cwd=work)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'top-1' in res.stdout and '00002' in res.stdout  # per-class table
    assert 'top-5' not in res.stdout  # 3 classes: top-5 is meaningless
    csv = (work / 'checkpoints' / 'signs' / 'test_confusion.csv').read_text().splitlines()
    assert csv[0] == 'true\\predicted,00000,00001,00002' and len(csv) == 4
    assert sum(int(v) for row in csv[1:] for v in row.split(',')[1:]) == 12

    res = run_cli('val', f'--load-path={best}', cwd=work)
    assert res.returncode == 0 and 'val:' in res.stdout, res.stderr[-2000:]


def test_resume_continues_from_the_last_finished_epoch(tiny_data, tmp_path):
    cfg = config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path), run_name='r',
                       **{**FAST, 'max_epoch': 1})
    run_dir = engine.fit(cfg)
    last = os.path.join(run_dir, 'last.pth')
    cfg = config.parse(resume=last, max_epoch=3)
    engine.fit(cfg)
    rows = [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]
    assert [r['epoch'] for r in rows] == [1, 2, 3]
    ckpt = torch.load(last, weights_only=True)
    assert ckpt['epoch'] == 2 and ckpt['plan']['model'] == 'SqueezeNet'


def test_a_run_killed_mid_epoch_resumes_with_the_cli(tmp_path):
    write_class_folders(tmp_path / 'data' / 'train', ['a', 'b'], 60)
    args = ['train', '--run-name=k', '--max-epoch=2', '--batch-size=2', '--num-workers=0', '--vis=false',
            '--model=SqueezeNet', '--image-size=32']
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / 'checkpoints' / 'k' / 'last.pth'
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # now inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(last, weights_only=True)['epoch']
    assert done == 0, 'the run finished before it could be killed; make it longer'
    res = run_cli('train', f'--resume={last}', cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'at epoch 2' in res.stdout
    rows = [json.loads(line) for line in open(tmp_path / 'checkpoints' / 'k' / 'metrics.jsonl')]
    assert [r['epoch'] for r in rows] == [1, 2]


def test_a_corrupt_image_is_skipped_and_counted_while_training(tiny_data, tmp_path):
    (tiny_data / 'train' / '00001' / 'zz_broken.png').write_bytes(b'not an image at all')
    res = run_cli('train', f'--train-data-root={tiny_data / "train"}', f'--checkpoint-dir={tmp_path / "ck"}',
                  *fast_args())
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.count('zz_broken.png') == 1
    assert '1 unreadable image(s) skipped' in res.stdout


@pytest.mark.parametrize('args, message', [
    (['train', '--lr-rate=0.1'], 'unknown setting --lr-rate; did you mean --lr?'),
    (['train', '--train-data-root=/no/such/folder'], 'data folder /no/such/folder does not exist'),
    (['testforacc', '--load-path=/no/such.pth'], 'checkpoint /no/such.pth does not exist'),
    (['trian'], "unknown command 'trian'"),
])
def test_bad_input_is_one_clear_line_without_traceback(args, message, tmp_path):
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr and 'Traceback' not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_an_error_inside_torch_keeps_its_traceback_and_a_user_mistake_is_one_line(tmp_path, monkeypatch, capsys):
    import main
    from utils import io as checkpoint
    path = tmp_path / 'c.pth'
    checkpoint.save_checkpoint({'model': {}, 'model_name': 'SqueezeNet', 'num_classes': 3}, path)

    def internal_error(*args, **kwargs):
        raise ValueError('an internal check of torch failed')
    monkeypatch.setattr(torch, 'load', internal_error)
    with pytest.raises(ValueError, match='an internal check of torch failed') as caught:
        main.main(['val', f'--load-path={path}'])
    assert not isinstance(caught.value, config.UserError)
    assert capsys.readouterr().err == ''
    assert main.main(['val', f'--load-path={tmp_path / "missing.pth"}']) == 2
    assert capsys.readouterr().err == f'error: checkpoint {tmp_path / "missing.pth"} does not exist; give the path ' \
                                      f'of a .pth file written by train\n'


def test_a_checkpoint_for_other_classes_is_refused_by_name(tiny_data, tmp_path):
    cfg = config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path), run_name='r', **FAST)
    best = os.path.join(engine.fit(cfg), 'best_model.pth')
    write_class_folders(tmp_path / 'other', ['cat', 'dog'], 2)
    res = run_cli('testforacc', f'--data-root={tmp_path / "other"}', f'--load-path={best}')
    assert res.returncode == 2 and "classes the model was not trained on: ['cat', 'dog']" in res.stderr


def test_help_lists_commands_settings_and_models_without_importing_torch():
    res = subprocess.run([sys.executable, '-X', 'importtime', os.path.join(ROOT, 'main.py'), 'help'],
                         capture_output=True, text=True)
    assert res.returncode == 0
    for text in ('train', 'testforacc', '--lr=0.001', '--use-gpu=False', 'ResNeSt50', 'e.g. python main.py'):
        assert text in res.stdout
    assert ' torch' not in res.stderr  # -X importtime lists every imported module on stderr


def test_resume_with_a_longer_max_epoch_stretches_the_onecycle_schedule(tiny_data, tmp_path):
    cfg = config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path), run_name='r',
                       scheduler='onecycle', **{**FAST, 'max_epoch': 1})
    run_dir = engine.fit(cfg)
    steps = len(open(os.path.join(run_dir, 'lr.csv')).read().splitlines())
    engine.fit(config.parse(resume=os.path.join(run_dir, 'last.pth'), max_epoch=3))
    lrs = [float(line.split(',')[2]) for line in open(os.path.join(run_dir, 'lr.csv'))]
    assert len(lrs) == 3 * steps  # the resumed epochs ran to the end
    assert lrs[steps] > lrs[steps - 1]  # the one-epoch cycle had annealed; the stretched one is still high
    assert lrs[-1] < 0.01 * max(lrs)  # and anneals at the new end


def test_patience_stops_a_run_that_plateaus_records_why_and_a_resume_says_it_is_finished(learnable_data, tmp_path):
    # this data is learnt to 9 of 9 on validation within a few epochs (conftest.LEARNS): nothing improves on that
    settings = dict(LEARNS, train_data_root=str(learnable_data), checkpoint_dir=str(tmp_path / 'ck'), run_name='r',
                    max_epoch=8, patience=2)
    run_dir = engine.fit(config.parse(**settings))
    rows = [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]
    best = [r['val_acc'] for r in rows].index(1.0)  # the first epoch at 9 of 9
    assert len(rows) == best + 3 < 8  # two epochs without improvement, then the stop
    assert not any('stopped' in r for r in rows[:-1])
    assert rows[-1]['stopped'].startswith('no improvement of the validation accuracy for 2 epochs')
    assert rows[-1]['stopped'].endswith(f'at epoch {best + 1}')
    assert torch.load(os.path.join(run_dir, 'best_model.pth'), weights_only=True)['epoch'] == best
    report = open(os.path.join(run_dir, 'report.html')).read()
    assert 'stopped early' in report and f'after epoch {len(rows)} of 8' in report
    last = os.path.join(run_dir, 'last.pth')
    before = sorted(os.listdir(run_dir))
    out = run_cli('train', f'--resume={last}')
    assert out.returncode == 2 and 'finished run' in out.stderr and f'stopped early at epoch {len(rows)}' in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and sorted(os.listdir(run_dir)) == before
    # with another patience it trains on, to the last epoch
    engine.fit(config.parse(resume=last, patience=0, html_report=False))
    assert len(open(os.path.join(run_dir, 'metrics.jsonl')).readlines()) == 8


def test_a_patience_below_zero_is_one_line(tmp_path):
    out = run_cli('train', '--patience=-1', f'--checkpoint-dir={tmp_path}')
    assert out.returncode == 2 and '--patience must be 0 or more' in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not os.listdir(tmp_path)
