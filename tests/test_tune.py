"""tune: the Optuna recipe search, its study table and best_config.json, a shared study, pruning."""
import csv
import json
import os
import subprocess
import sys

import optuna
import pytest

import config
from conftest import FAST, ROOT, run_cli
from utils.train import tune

ARGS = [f'--{k.replace("_", "-")}={v}' for k, v in FAST.items()]


def study_rows(tune_dir):
    with open(os.path.join(tune_dir, 'study.csv')) as f:
        return list(csv.DictReader(f))


def tune_dirs(folder):
    return sorted(os.path.join(folder, d) for d in os.listdir(folder) if d.startswith('tune-'))


def test_two_trials_write_a_best_config_that_train_reruns(tiny_data, tmp_path, capsys):
    ck = tmp_path / 'ck'
    tune_dir = tune.run(config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(ck), n_trials=2,
                                     **FAST))
    out = capsys.readouterr().out
    rows = study_rows(tune_dir)
    assert [r['state'] for r in rows] == ['complete', 'complete'] and 'best_so_far' in rows[0] and 'lr' in rows[0]
    # the first trial is the recipe train runs without tune: the defaults of every searched setting
    assert (float(rows[0]['lr']), float(rows[0]['weight_decay']), rows[0]['hflip'], rows[0]['augment']) == \
        (1e-3, 1e-4, 'auto', 'basic')
    number = int(out.split('chosen: trial ')[1].split(',')[0])  # the best, or train's recipe within one standard error
    best = next(r for r in rows if int(r['trial']) == number)
    # --keep-trials=best: only the chosen trial keeps its checkpoints; every trial keeps its config and metrics
    other = next(r for r in rows if r['run'] != best['run'])
    assert os.path.isfile(os.path.join(best['run'], 'best_model.pth'))
    assert not [f for f in os.listdir(other['run']) if f.endswith('.pth')]
    assert os.path.isfile(os.path.join(other['run'], 'metrics.jsonl'))
    path = os.path.join(tune_dir, 'best_config.json')
    settings = json.load(open(path))
    trial_settings = json.load(open(os.path.join(best['run'], 'config.json')))['used']
    assert settings['lr'] == float(best['lr']) and settings['augment'] == best['augment']
    assert 'run_name' not in settings and 'n_trials' not in settings and settings['checkpoint_dir'] == str(ck)
    assert 'trial 0' in out and 'best_so_far' in out and f'--config={path}' in out

    rerun = run_cli('train', f'--config={path}', '--run-name=rerun', '--nohtml-report')
    assert rerun.returncode == 0, rerun.stderr
    again = json.load(open(ck / 'rerun' / 'config.json'))['used']
    differ = {k for k in trial_settings if again[k] != trial_settings[k]}
    assert differ == {'checkpoint_dir', 'run_name', 'n_trials'}, differ  # the recipe is the best trial's


def test_the_first_trial_is_the_recipe_train_would_run_less_what_is_given():
    cfg = config.parse(search_space='full', lr=0.01)  # --lr given: held fixed, not searched
    first = tune.first_params(cfg, ('SqueezeNet', 'ResNet34'))
    assert first == {'weight_decay': 1e-4, 'max_epoch': 0, 'hflip': 'auto', 'augment': 'basic', 'jitter': 0.2,
                     'erasing': 0.25, 'mix': 'mixup', 'mix_prob': 0.5, 'sampler': 'shuffle', 'loss': 'label_smooth',
                     'stem': 'auto', 'model': 'ResNet34'}


def test_a_lead_within_one_standard_error_keeps_the_recipe_train_runs():
    study = optuna.create_study(direction='maximize')
    lr = {'lr': optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}

    def add(value, **attrs):
        study.add_trial(optuna.trial.create_trial(params={'lr': 1e-3}, distributions=lr, value=value,
                                                  user_attrs=attrs))
    add(0.92, recipe='train')
    add(0.93)
    chosen, best, se = tune.choose(study, 100)
    assert chosen.number == 0 and se == pytest.approx(0.0271, abs=1e-4)  # one image of 100 is no evidence
    assert best.number == 1  # the lead it weighed, from the same reading of the study: what tune prints
    assert tune.choose(study, 10000)[0].number == 1  # on 10,000 images one point is 3.7 standard errors
    add(0.96)
    assert tune.choose(study, 100)[0].number == 2  # 4 points > 2.7


def test_two_processes_share_one_sqlite_study(tiny_data, tmp_path):
    url = f'sqlite:///{tmp_path / "study.db"}'
    ck = tmp_path / 'ck'
    cmd = [sys.executable, os.path.join(ROOT, 'main.py'), 'tune', f'--train-data-root={tiny_data / "train"}',
           f'--checkpoint-dir={ck}', f'--storage={url}', '--study-name=shared', '--n-trials=1', *ARGS]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = optuna.load_study(study_name='shared', storage=url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # one trial from each process, each in its own tune run directory
    assert {os.path.dirname(t.user_attrs['run_dir']) for t in trials} == set(tune_dirs(ck))
    assert len(tune_dirs(ck)) == 2


def test_a_pruned_trial_is_recorded_as_pruned_with_its_epochs_on_disk(tiny_data, tmp_path, capsys):
    cfg = config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path / 'ck'), n_trials=1,
                       prune_below=1.01, keep_trials='all', **dict(FAST, max_epoch=3))
    tune_dir = tune.run(cfg)
    [row] = study_rows(tune_dir)
    assert row['state'] == 'pruned' and row['best_so_far'] == ''
    study = optuna.load_study(study_name='tune', storage=f'sqlite:///{tune_dir}/study.db')
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    with open(os.path.join(row['run'], 'metrics.jsonl')) as f:
        assert len(f.readlines()) == 1  # stopped after the first epoch (33 % of 3 >= 30 %), which is complete
    assert os.path.isfile(os.path.join(row['run'], 'last.pth'))  # --keep-trials=all keeps a pruned trial's too
    assert not os.path.exists(os.path.join(tune_dir, 'best_config.json'))
    assert 'no trial completed' in capsys.readouterr().out


def test_bad_tune_settings_are_one_line_before_any_file(tmp_path):
    for args, message in ((['--search-space=fast'],
                           "unknown --search-space='fast'; choose one of: quick, tricks, full"),
                          (['--n-trials=0'], '--n-trials=0 runs trials until --timeout: give --timeout=SECONDS too')):
        done = run_cli('tune', f'--checkpoint-dir={tmp_path / "ck"}', *args)
        assert done.returncode == 2 and done.stderr.strip() == f'error: {message}', done.stderr
        assert not (tmp_path / 'ck').exists()


def test_a_shared_study_of_other_classes_is_refused(tiny_data, tmp_path):
    url = f'sqlite:///{tmp_path / "study.db"}'
    optuna.create_study(study_name='tune', storage=url).set_user_attr('classes', ['cat', 'dog'])
    cfg = config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path / 'ck'), storage=url,
                       **FAST)
    with pytest.raises(config.UserError, match=r"study 'tune' in .* was made for other classes; give another"):
        tune.run(cfg)
    assert not (tmp_path / 'ck').exists()
