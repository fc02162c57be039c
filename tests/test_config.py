import ast
import glob
import json
import os

import pytest

import config
from conftest import ROOT, run_cli, write_class_folders
from main import quote_values


def test_unknown_setting_names_the_closest_valid_one():
    with pytest.raises(config.ConfigError, match=r'unknown setting --lr-rate; did you mean --lr\?'):
        config.parse(lr_rate=0.1)


def test_unknown_setting_with_a_typo_suggests_the_setting():
    with pytest.raises(config.ConfigError, match='did you mean --batch-size'):
        config.parse(bach_size=3)


@pytest.mark.parametrize('text, expected', [('false', False), ('False', False), ('0', False), ('no', False),
                                            ('true', True), ('1', True), (True, True), (False, False)])
def test_booleans_are_coerced_from_text(text, expected):
    assert config.parse(use_gpu=text).use_gpu is expected


def test_a_non_boolean_for_a_boolean_setting_is_refused():
    with pytest.raises(config.ConfigError, match='not a valid bool'):
        config.parse(use_gpu='maybe')


def test_values_take_the_type_of_their_default():
    cfg = config.parse(env='0701', batch_size='256', lr='3e-4', max_epoch=2.0)
    assert cfg.env == '0701' and cfg.batch_size == 256 and cfg.lr == 3e-4 and cfg.max_epoch == 2
    with pytest.raises(config.ConfigError, match='--batch-size'):
        config.parse(batch_size='many')


def test_command_line_values_reach_parse_as_the_typed_text():
    # fire alone would turn --env=0701 into the int 701
    import fire
    seen = {}
    fire.Fire(lambda **kw: seen.update(kw), command=quote_values(['--env=0701', '--batch-size', '256', '--use-gpu']))
    cfg = config.parse(**seen)
    assert cfg.env == '0701' and cfg.batch_size == 256 and cfg.use_gpu is True


def test_range_checks():
    with pytest.raises(config.ConfigError, match='val-ratio'):
        config.parse(val_ratio=1.5)
    with pytest.raises(config.ConfigError, match='image-size'):
        config.parse(image_size=16)


def test_max_epoch_auto_trains_a_small_set_longer_and_keeps_the_demo_at_15_epochs():
    assert config.parse().max_epoch == 0  # auto is the default
    assert config.auto_epochs(1221) == 15  # the digits demo's training split
    assert config.auto_epochs(490) == 37  # the suite's photos: 18,000 / 490 images, rounded up
    assert config.auto_epochs(300) == 60 and config.auto_epochs(20) == 100 and config.auto_epochs(50000) == 15
    with pytest.raises(config.ConfigError, match=r'--max-epoch must be 0 \(auto\) or at least 1, got -1'):
        config.parse(max_epoch=-1)
    with pytest.raises(config.ConfigError, match=r'--freeze-epochs must be within 0\.\.15'):
        config.parse(freeze_epochs=16)  # auto trains at least 15 epochs
    assert config.parse(freeze_epochs=15).max_epoch == 0


def test_every_setting_has_a_help_line_and_survives_a_round_trip():
    for name, default, kind, text, group in config.settings():
        assert text and group, name
    cfg = config.parse(lr=0.5, env='x')
    assert config.parse(**cfg.asked()) == cfg and cfg.asked() == {'env': 'x', 'lr': 0.5}
    plan = config.Plan.of(cfg)
    assert config.Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize('given, message', [
    (dict(attention='foo'), r"unknown --attention='foo'; choose one of: auto, none, se, cbam"),
    (dict(normalize='foo'), r"unknown --normalize='foo'; choose one of: auto, imagenet, dataset"),
    (dict(cutmix_prob=0.7, mixup_prob=0.5), r'sum <= 1, got 0.7 \+ 0.5'),
    (dict(mixup_prob=-0.1), r'both in 0..1'),
])
def test_trick_choices_and_mix_probabilities_are_checked_when_parsed(given, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse(**given)


@pytest.mark.parametrize('given, message', [
    (dict(momentum=-0.9), r'--momentum must be 0 or more, got -0.9'),
    (dict(weight_decay=-1), r'--weight-decay must be 0 or more'),
    (dict(mixup_alpha=0), r'--mixup-alpha must be positive'),
    (dict(ranger_k=0), r'--ranger-k must be at least 1'),
    (dict(ranger_alpha=1.5), r'--ranger-alpha in \(0, 1\]'),
    (dict(lr_decay=2), r'--lr-decay must be in \(0, 1\)'),
    (dict(lr_milestones='5,ten'), r"--lr-milestones='ten' is not a valid int"),
    (dict(joint_weights='0.2,0.3,0.5'), r'--joint-weights takes two numbers'),
])
def test_values_torch_would_refuse_later_are_refused_when_parsed(given, message):
    # torch's own ValueError would come after the run directory, and with a traceback
    with pytest.raises(config.ConfigError, match=message):
        config.parse(**given)


def test_attention_on_a_model_without_residual_blocks_stops_before_a_run_directory_exists(tmp_path):
    write_class_folders(tmp_path / 'data' / 'train', ['a', 'b'], 4)
    res = run_cli('train', '--model=SqueezeNet', '--attention=cbam', '--vis=false', cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == \
        'error: --attention=cbam works with ResNet34 and ResNet101, not SqueezeNet; use --attention=none'
    assert not (tmp_path / 'checkpoints').exists() or not any((tmp_path / 'checkpoints').iterdir())


def test_settings_are_read_from_the_config_without_a_second_default():
    # getattr(cfg, 'loss', 'ce') would carry its own default beside config.py's, and they drift apart
    names = {name for name, *_ in config.settings()}
    found = []
    for path in glob.glob(os.path.join(ROOT, '**', '*.py'), recursive=True):
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'getattr'
                    and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in names):
                found.append(f'{os.path.relpath(path, ROOT)}:{node.lineno} {ast.unparse(node)}')
    assert not found, found


BAD_CHOICES = [(name, 'bogus') for name in config.choices()] + [('model', 'timm/no_such_net'),
                                                                  ('optimizer', 'timm/no_such_opt')]


@pytest.mark.parametrize('name, value', BAD_CHOICES)
def test_a_bad_choice_stops_with_one_line_before_anything_is_written(name, value, tmp_path, monkeypatch, capsys):
    # no data here: a late check would first write the digits demo (data/demo) and a run directory
    monkeypatch.chdir(tmp_path)
    import main
    assert main.main(['train', f'--{config.flag(name)}={value}', '--vis=false']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: unknown --{config.flag(name)}='{value}'")
    assert list(tmp_path.iterdir()) == []


def test_choices_take_any_case_and_become_the_listed_spelling():
    cfg = config.parse(model='squeezenet', loss='CE', tta='HFLIP', optimizer='TIMM/Lamb')
    assert (cfg.model, cfg.loss, cfg.tta, cfg.optimizer) == ('SqueezeNet', 'ce', 'hflip', 'timm/lamb')
    with pytest.raises(config.ConfigError, match=r"unknown --loss='lable_smooth'; choose one of: ce, label_smooth, "
                                                 r"joint; did you mean label_smooth\?"):
        config.parse(loss='lable_smooth')
    with pytest.raises(config.ConfigError, match=r"timm has no model 'resnet5'; did you mean timm/resnet50\?"):
        config.parse(model='timm/resnet5')


def test_help_lists_the_choices_of_every_enumerated_setting(capsys):
    import main
    assert main.main(['help']) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, allowed in config.choices().items():
        line = next(line for line in lines if line.startswith(f'    --{config.flag(name)}='))
        assert f'(one of: {" | ".join(allowed)})' in line, line


def test_a_runs_config_json_reruns_to_the_same_effective_config(tiny_data, tmp_path):
    from conftest import FAST
    from utils.train import engine
    first = engine.fit(config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path),
                                    run_name='a', lr=0.01, hflip=True, augment='affine', cutmix_prob=0.3,
                                    html_report=False, **FAST))
    again = engine.fit(config.parse(config=os.path.join(first, 'config.json'), run_name='b'))
    a, b = (json.load(open(os.path.join(d, 'config.json'))) for d in (first, again))
    assert a['asked'] == b['asked']  # what --config reruns (the run's name is not part of it)
    assert {k for k in a['used'] if a['used'][k] != b['used'][k]} == {'run_name'}
    assert a['used'].keys() == b['used'].keys()
    assert b['used']['mixup_prob'] == 0.0 and b['used']['cutmix_prob'] == 0.3


def settings_file(tmp_path, values):
    path = tmp_path / 'settings.json'
    path.write_text(values if isinstance(values, str) else json.dumps(values))
    return str(path)


@pytest.mark.parametrize('values, message', [
    ({'lr_rate': 0.1}, r'settings.json: unknown setting --lr-rate; did you mean --lr\?'),
    ({'batch_size': 'many'}, r"settings.json: --batch-size='many' is not a valid int"),
    ({'max_epoch': 2.5}, r'settings.json: --max-epoch=2.5 is not a valid int'),
    ({'loss': 'focal'}, r"unknown --loss='focal'; choose one of: ce, label_smooth, joint"),
    ({'val_ratio': 2}, r'--val-ratio must be between 0 and 1'),
    ('{"lr": 0.1,', r'settings.json is not valid JSON'),
    ('[0.1]', r'settings.json must hold one JSON object of settings'),
])
def test_a_settings_file_gets_the_checks_of_the_command_line(tmp_path, values, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse(config=settings_file(tmp_path, values))


def test_the_command_line_wins_over_the_settings_file(tmp_path):
    path = settings_file(tmp_path, {'lr': 0.1, 'batch_size': 16, 'mixup_prob': 0.5, 'pretrained_weights': {'x': 1}})
    cfg = config.parse(config=path, lr='0.2', cutmix_prob='0.4')
    assert (cfg.lr, cfg.batch_size, cfg.cutmix_prob, cfg.mixup_prob) == (0.2, 16, 0.4, 0.0)
    assert {'lr', 'batch_size', 'mixup_prob', 'cutmix_prob'} <= cfg.given
    assert config.parse(config=path).mixup_prob == 0.5


def test_a_bad_settings_file_is_one_line_before_any_file(tmp_path):
    path = settings_file(tmp_path, {'bach_size': 8})
    done = run_cli('train', f'--config={path}', f'--checkpoint-dir={tmp_path / "ck"}')
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f'error: --config={path}: unknown setting --bach-size; did you mean --batch-size?'
    assert not (tmp_path / 'ck').exists()
    missing = run_cli('train', f'--config={tmp_path / "none.json"}')
    assert missing.stderr.strip().startswith('error: --config=') and 'cannot read it' in missing.stderr
