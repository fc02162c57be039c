"""One resolved, frozen plan per run: what was asked and what was used, decided once before any file is written,
recorded in config.json and the checkpoints, and read by every command after -- and what that fixes for users."""
import ast
import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch

import config
import main
from benchmarks import faults
from conftest import FAST, LEARNS, ROOT, run_cli, train_test_settings, write_class_folders
from utils.evaluate.loop import write_predictions
from utils.train import tune

CLASSES = ['00000', '00001', '00002']


def flags(settings):
    return [f'--{k.replace("_", "-")}={v}' for k, v in settings.items()]


def one_line(res, *texts):
    """The command stopped with exit 2 and one line on stderr holding every text, no traceback."""
    lines = res.stderr.strip().splitlines()
    return res.returncode == 2 and len(lines) == 1 and 'Traceback' not in res.stderr and all(t in lines[0]
                                                                                           for t in texts)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """A 32 px SqueezeNet run (its own statistics) and a ResNet34 + CBAM run on the same tiny folders."""
    root = tmp_path_factory.mktemp('plan')
    common = train_test_settings(root, CLASSES)
    args = [*flags(common), '--nohtml-report']
    for name, settings in (('squeeze', FAST), ('cbam', LEARNS)):
        res = run_cli('train', *args, *flags(settings), f'--run-name={name}', cwd=root)
        assert res.returncode == 0, res.stderr[-2000:]
    return {'root': root, 'args': args, 'ck': root / 'ck', 'best': root / 'ck' / 'squeeze' / 'best_model.pth'}


def record(run_dir):
    with open(os.path.join(run_dir, 'config.json')) as f:
        return json.load(f)


def test_a_runs_config_json_reruns_it_after_lr_auto_and_after_a_resume(runs):
    """Item 1: config.json of an --lr=auto run held the sweep's record, which --config refused as a setting; a
    resumed run's config.json named the checkpoint to resume, so --config continued the old run."""
    root, ck, args = runs['root'], runs['ck'], runs['args']
    res = run_cli('train', *args, *flags(FAST), '--lr=auto', '--lr-find-steps=10', '--run-name=auto', cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    rerun = run_cli('train', f'--config={ck / "auto" / "config.json"}', '--run-name=auto-again', cwd=root)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    first, again = record(ck / 'auto'), record(ck / 'auto-again')
    assert first['asked']['lr'] == again['asked']['lr'] == 'auto'  # the rerun finds its learning rate again
    assert again['used']['lr'] == again['used']['lr_find']['valley'] and again['used']['lr_find']['steps'] >= 2

    res = run_cli('train', *args, *flags(FAST), '--run-name=short', cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_cli('train', f'--resume={ck / "short" / "last.pth"}', '--max-epoch=2', cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    assert record(ck / 'short')['asked']['max_epoch'] == 2 and 'resume' not in record(ck / 'short')['asked']
    rerun = run_cli('train', f'--config={ck / "short" / "config.json"}', '--run-name=short-again', cwd=root)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = [json.loads(line)['epoch'] for line in open(ck / 'short-again' / 'metrics.jsonl')]
    assert rows == [1, 2]  # a new run of the same recipe, from its first epoch


def test_what_the_machine_chose_is_marked_and_decided_again_on_another_machine(runs, tmp_path):
    """Item 2: the cache a machine chose was stored as asked, so a GPU run's config.json, tune's best_config.json
    and the exported file of a GPU run failed on a CPU (--cache=gpu needs CUDA)."""
    root, ck = runs['root'], runs['ck']
    rec = record(ck / 'squeeze')
    assert 'cache' not in rec['asked'] and rec['used']['cache'] == 'ram'  # tiny images: the RAM cache, here
    assert 'cache' in rec['used']['machine_chose'] and 'num_workers' not in rec['used']['machine_chose']  # asked
    # the same run as a GPU machine records it, and an earlier version's flat config.json of such a run
    gpu = {'asked': rec['asked'], 'used': {**rec['used'], 'cache': 'gpu', 'device': 'cuda'}}
    flat = {**{k: v for k, v in rec['used'].items() if k in {n for n, *_ in config.settings()}}, 'cache': 'gpu',
            'run_name': 'old', 'lr_find': {'valley': 1e-3}, 'pretrained_weights': None}
    for name, content in (('gpu', gpu), ('flat', flat)):
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps(content))
        res = run_cli('train', f'--config={path}', f'--run-name={name}-on-cpu', cwd=root)
        assert res.returncode == 0, res.stderr[-2000:]
        assert record(ck / f'{name}-on-cpu')['used']['cache'] == 'ram'

    res = run_cli('export', f'--load-path={runs["best"]}', '--format=onnx', cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    onnx = str(runs['best']).replace('.pth', '.onnx')
    sidecar = json.load(open(onnx + '.json'))
    for key in ('plan', 'config'):  # where the exported file's record keeps the run's settings
        if key in sidecar:
            sidecar[key]['cache'] = 'gpu'
    json.dump(sidecar, open(onnx + '.json', 'w'))
    res = run_cli('val', f'--load-path={onnx}', '--vis=false', cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'cache:' not in res.stdout  # evaluation decodes nothing ahead: the training set is not cached first
    res = run_cli('val', f'--load-path={onnx}', '--normalize=imagenet', '--vis=false', cwd=root)
    assert one_line(res, '--normalize=dataset', '--normalize=imagenet')


@pytest.mark.parametrize('run, flag, used', [('squeeze', '--image-size=64', '--image-size=32'),
                                             ('squeeze', '--normalize=imagenet', '--normalize=dataset'),
                                             ('cbam', '--attention=none', '--attention=cbam')])
def test_evaluation_refuses_a_value_that_contradicts_the_checkpoint(runs, run, flag, used):
    """Item 3: val --image-size=64 evaluated a 32 px checkpoint at 64 px (and overwrote val_metrics.json),
    --normalize swapped its statistics, --attention=none on a CBAM checkpoint ended in a state_dict traceback."""
    best, report = runs['ck'] / run / 'best_model.pth', runs['ck'] / run / 'val_metrics.json'
    before = report.read_bytes() if report.exists() else None
    res = run_cli('val', f'--load-path={best}', flag, '--vis=false', cwd=runs['root'])
    assert one_line(res, flag, used, str(best))
    assert (report.read_bytes() if report.exists() else None) == before  # nothing evaluated, nothing written
    res = run_cli('val', f'--load-path={best}', used, '--batch-size=4', '--vis=false', cwd=runs['root'])
    assert res.returncode == 0, res.stderr[-2000:]  # the checkpoint's own value, and a runtime setting, are fine


def test_published_weights_bring_their_own_statistics_and_interpolation(runs, tmp_path):
    """Item 4: normalize=auto gave ImageNet's statistics to every pretrained model; timm records each model's own
    (this one: mean and std 0.5, bicubic)."""
    import timm
    from test_pretrained import put_in_hf_cache
    put_in_hf_cache(tmp_path / 'hf', 'timm/test_efficientnet_gn.r160_in1k',
                    timm.create_model('test_efficientnet_gn').state_dict())
    res = run_cli('train', *runs['args'], '--model=timm/test_efficientnet_gn',
                  '--pretrained=timm/test_efficientnet_gn.r160_in1k', '--image-size=32', '--max-epoch=1',
                  '--batch-size=8', '--num-workers=0', '--vis=false', '--run-name=timm', cwd=runs['root'],
                  env={'HF_HOME': str(tmp_path / 'hf'), 'HF_HUB_OFFLINE': '1'})
    assert res.returncode == 0, res.stderr[-2000:]
    used = record(runs['ck'] / 'timm')['used']
    assert (used['mean'], used['std'], used['interpolation'], used['normalize']) == \
        ([0.5] * 3, [0.5] * 3, 'bicubic', 'weights')
    assert torch.load(runs['ck'] / 'timm' / 'best_model.pth', weights_only=True)['plan']['mean'] == [0.5] * 3


def test_command_line_spellings_and_help_say_what_they_do(runs, capsys):
    """Item 5: --no-verify (which help and export's message name) stopped as "unknown setting ---verify", a
    mistyped --pretrained was found only inside the run (in tune after its folder existed), and help misnamed
    --lb-neg's type, --warmup-epochs' schedules, --kfold's group and what --load-path takes."""
    res = run_cli('export', f'--load-path={runs["best"]}', '--format=torchscript', '--no-verify', cwd=runs['root'])
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'parity' not in res.stdout and os.path.isfile(str(runs['best']).replace('.pth', '.torchscript'))
    tune_ck = runs['root'] / 'tune-ck'
    res = run_cli('tune', '--pretrained=imagnet', f'--checkpoint-dir={tune_ck}', cwd=runs['root'])
    assert one_line(res, 'imagnet', 'did you mean imagenet') and not tune_ck.exists()
    assert main.main(['help']) == 0
    text = capsys.readouterr().out
    line = {ln.split('=')[0].strip(): ln for ln in text.splitlines() if ln.strip().startswith('--')}
    assert "(float or auto)" in line['--lb-neg'] and 'onecycle' in line['--warmup-epochs']
    assert '.onnx' in line['--load-path'] and 'svm' in line['--load-path']
    data_group = text.split('[data]')[1].split('\n  [')[0]
    assert '--kfold=' in data_group and '--fold=' in data_group


def test_tune_samples_only_values_that_can_run_with_the_fixed_settings():
    """Item 6: a sampled value that conflicts with a setting the user fixed raised inside fit and ended the study
    (--cache=ram and randaugment, --freeze-epochs=10 and 5 epochs, --pretrained and the small stem); with a fixed
    --attention=cbam the full space could not even list its models."""
    cases = [(dict(cache='ram'), 'augment', lambda v: v in ('none', 'basic', 'resized')),
             (dict(freeze_epochs=10), 'max_epoch', lambda v: v == 0 or v >= 10),
             (dict(pretrained='imagenet'), 'stem', lambda v: v != 'small')]
    for fixed, name, ok in cases:
        cfg = config.parse(search_space='tricks', **fixed)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        drawn = {tune.suggest(study.ask(), cfg, ())[name] for _ in range(40)}
        assert drawn and all(ok(v) for v in drawn), (fixed, drawn)
    cfg = config.parse(search_space='full', attention='cbam')
    assert tune.fitting_models(cfg, 3) == ('ResNet34',)


def test_a_failed_trial_is_recorded_and_the_study_goes_on(tiny_data, tmp_path, monkeypatch, capsys):
    """Item 6: one failed trial ended the whole study (study.optimize had no catch=). A trial is made to fail as
    a machine can make it fail (out of memory on its device), by fault injection into the real training."""
    real_fit = tune.engine.fit

    def fit_failing_trial_1(cfg, **kwargs):
        if cfg.run_name == 'trial-001':
            raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return real_fit(cfg, **kwargs)
    monkeypatch.setattr(tune.engine, 'fit', fit_failing_trial_1)
    tune_dir = tune.run(config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path / 'ck'),
                                     n_trials=3, **FAST))
    rows = list(csv.DictReader(open(os.path.join(tune_dir, 'study.csv'))))
    assert [r['state'] for r in rows] == ['complete', 'fail', 'complete']
    assert 'RuntimeError: CUDA out of memory' in rows[1]['why']
    assert os.path.isfile(os.path.join(tune_dir, 'best_config.json'))

    def fit_always_failing(cfg, **kwargs):
        raise RuntimeError('CUDA out of memory')
    monkeypatch.setattr(tune.engine, 'fit', fit_always_failing)
    code = main.main(['tune', f'--train-data-root={tiny_data / "train"}', f'--checkpoint-dir={tmp_path / "ck2"}',
                      '--n-trials=2', *flags(FAST)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and 'no trial could run (2 tried)' in err[-1] and 'CUDA out of memory' in err[-1]


def test_best_model_holds_the_weights_and_what_evaluation_needs_without_optimizer_state(runs, tmp_path):
    """Item 7: best_model.pth carried the optimizer state of last.pth (the demo's: 257 MB). A best_model.pth of
    that earlier form still evaluates."""
    run_dir = runs['ck'] / 'squeeze'
    best = torch.load(run_dir / 'best_model.pth', weights_only=True)
    last = torch.load(run_dir / 'last.pth', weights_only=True)
    assert not {'optimizer', 'scheduler', 'ema'} & set(best) and {'optimizer', 'scheduler'} <= set(last)
    assert best['plan']['image_size'] == 32 and best['classes'] == CLASSES and 'asked' in best
    assert os.path.getsize(run_dir / 'best_model.pth') < 0.5 * os.path.getsize(run_dir / 'last.pth')
    settings = {n for n, *_ in config.settings()}
    old = {**{k: v for k, v in last.items() if k not in ('plan', 'asked')},
           'config': {k: v for k, v in last['plan'].items() if k in settings},
           'normalization': {'mean': last['plan']['mean'], 'std': last['plan']['std']}}
    torch.save(old, tmp_path / 'old_best.pth')
    for path in (run_dir / 'best_model.pth', tmp_path / 'old_best.pth'):
        res = run_cli('val', f'--load-path={path}', '--vis=false', cwd=runs['root'])
        assert res.returncode == 0, res.stderr[-2000:]
    metrics = [json.load(open(p)) for p in (run_dir / 'val_metrics.json', tmp_path / 'val_metrics.json')]
    assert metrics[0]['top1'] == metrics[1]['top1'] and metrics[0]['loss'] == pytest.approx(metrics[1]['loss'])


def test_an_epochs_metrics_row_is_written_once_its_last_pth_is_on_disk(tmp_path):
    """Item 8: the metrics row of epoch N was written before its last.pth, which is written while epoch N+1
    trains: a kill in that window left a row for an epoch no checkpoint holds. Now the row follows last.pth, and
    a kill between the two is repaired on resume."""
    write_class_folders(tmp_path / 'data' / 'train', ['a', 'b', 'c'], 10)
    args = [f'--train-data-root={tmp_path / "data" / "train"}', '--model=SqueezeNet', '--image-size=32',
            '--max-epoch=2', '--batch-size=8', '--num-workers=0', '--vis=false', '--nohtml-report']
    res = faults.train([f'--checkpoint-dir={tmp_path / "runs"}', '--run-name=k', *args], tmp_path,
                       'metrics.jsonl-1')  # killed as the first row is about to be appended
    assert res.returncode == -9, res.stderr[-2000:]
    run_dir = tmp_path / 'runs' / 'k'
    assert torch.load(run_dir / 'last.pth', weights_only=True)['epoch'] == 0  # epoch 1 is on disk already
    res = faults.train([f'--resume={run_dir / "last.pth"}'], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [json.loads(line)['epoch'] for line in open(run_dir / 'metrics.jsonl')] == [1, 2]


def test_a_log_redirected_to_a_file_holds_no_progress_bar_redraws(runs):
    """Item 9: a log redirected to a file (`python main.py train > train.log 2>&1`) was filled with tqdm's
    carriage-return redraws."""
    log = runs['root'] / 'train.log'
    with open(log, 'wb') as out:
        code = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), 'train', *runs['args'], *flags(FAST),
                               '--max-epoch=2', '--run-name=log'], cwd=runs['root'], stdout=out,
                              stderr=subprocess.STDOUT, timeout=300).returncode
    text = log.read_bytes()
    assert code == 0, text[-2000:]
    assert b'\r' not in text  # read as bytes: a text-mode read would turn each \r into a line end
    assert b'epoch 1/2: train loss' in text and b'epoch 2/2: train loss' in text


def test_every_column_of_the_predictions_csv_rounds_a_probability_alike(tmp_path):
    """Item 10: confidence (6 decimals) and top-k (4 decimals) rounded the same probability differently."""
    probs = np.array([[0.333449, 0.333351, 0.3332], [0.1, 0.25, 0.65]])
    write_predictions(tmp_path / 'p.csv', ['a.png', 'b.png'], probs, ['x', 'y', 'z'], topk=3)
    for row in csv.DictReader(open(tmp_path / 'p.csv')):
        top = row['top3'].split(';')
        assert top[0] == f'{row["class"]}:{row["confidence"]}'
        assert [float(t.split(':')[1]) for t in top] == sorted((float(t.split(':')[1]) for t in top), reverse=True)


SETTINGS_NAMES = ('cfg', 'asked', 'plan', 'settings', 'trial_cfg', 'run_cfg', 'eval_cfg', 'train_cfg', 'mcfg',
                  'ecfg', 'base', 'plain')


def test_no_code_assigns_to_settings_or_a_plan_after_parse():
    """DefaultConfig is what the user asked and a Plan what a run uses: both are frozen, and no module assigns to
    one (an attribute of a name that holds one, or setattr on it) -- a decision makes a new Plan instead."""
    found = []
    for folder in ('.', 'data', 'models', 'utils', 'benchmarks'):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            if folder == '.' and dirpath != ROOT:
                continue
            for name in files:
                if not name.endswith('.py'):
                    continue
                path = os.path.join(dirpath, name)
                for node in ast.walk(ast.parse(open(path).read())):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                        node, (ast.AugAssign, ast.AnnAssign)) else []
                    bad = [t for t in targets if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                           and t.value.id in SETTINGS_NAMES]
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'setattr' \
                            and isinstance(node.args[0], ast.Name) and node.args[0].id in SETTINGS_NAMES:
                        bad.append(node)
                    found += [f'{os.path.relpath(path, ROOT)}:{n.lineno}' for n in bad]
    assert found == []
    cfg = config.parse(lr='auto')
    plan = config.Plan.of(cfg)
    for obj in (cfg, plan):
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.lr = 0.1
    assert dataclasses.replace(plan, lr=0.1).lr == 0.1 and plan.lr == 'auto'
