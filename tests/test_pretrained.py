"""--pretrained through each library's own cache (never downloading: a random state_dict is put under the exact
path and file name the library looks for), the missing-file message, the auto settings that follow the weights,
attention that starts as the identity, and the fine-tuning schedule (freeze, unfreeze, discriminative rates)."""
import hashlib
import json
import os

import pytest
import torch

import config
import models
from conftest import FAST, run_cli
from utils.train import engine
from utils.train.optim import build_optimizer, build_scheduler


def put_in_torch_hub(monkeypatch, tmp_path, name, filename):
    """A random 1000-class state_dict of `name` where torch hub keeps `filename`; returns (path, its state)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    folder = tmp_path / 'torch' / 'hub' / 'checkpoints'
    folder.mkdir(parents=True, exist_ok=True)
    state = models.build(name, 1000).net.state_dict()
    torch.save(state, folder / filename)
    return folder / filename, state


def put_in_hf_cache(hf_home, repo, state):
    """`state` as model.safetensors in the Hugging Face cache layout (refs/main -> snapshots/<id>/)."""
    from safetensors.torch import save_file
    folder = hf_home / 'hub' / ('models--' + repo.replace('/', '--'))
    (folder / 'refs').mkdir(parents=True)
    (folder / 'refs' / 'main').write_text('0123abcd')
    (folder / 'snapshots' / '0123abcd').mkdir(parents=True)
    save_file(state, folder / 'snapshots' / '0123abcd' / 'model.safetensors')
    return folder / 'snapshots' / '0123abcd' / 'model.safetensors'


@pytest.mark.parametrize('name, filename', [('SqueezeNet', 'squeezenet1_1-b8a52dc0.pth'),
                                            ('ResNeSt50', 'resnest50-528c19ca.pth')])
def test_imagenet_weights_are_read_from_torch_hubs_checkpoints_folder(name, filename, tmp_path, monkeypatch, capsys):
    _, state = put_in_torch_hub(monkeypatch, tmp_path, name, filename)
    model = models.build(name, 3, pretrained='imagenet')
    own = model.net.state_dict()
    head = f'{model.head_path}.weight'
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith(model.head_path))
    assert own[head].shape[0] == 3 and 'head replaced for 3 classes' in capsys.readouterr().out


def test_a_missing_file_is_one_line_naming_it_its_folder_and_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    folder = tmp_path / 'torch' / 'hub' / 'checkpoints'
    res = run_cli('train', '--model=ResNet34', '--pretrained=imagenet', f'--checkpoint-dir={tmp_path / "ck"}',
                  '--vis=false', cwd=tmp_path)
    assert res.returncode == 2 and 'Traceback' not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    for text in ('resnet34-b627a593.pth', str(folder), "torchvision.models.resnet34(weights='IMAGENET1K_V1')"):
        assert text in res.stderr
    assert not (tmp_path / 'ck').exists()  # refused before anything was written
    res = run_cli('train', '--model=EfficientNet-B0', '--pretrained=imagenet', '--vis=false', cwd=tmp_path,
                  env={'HF_HOME': str(tmp_path / 'hf')})
    hf = tmp_path / 'hf' / 'hub' / 'models--timm--efficientnet_b0.ra_in1k'
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    for text in ('model.safetensors', str(hf), "timm.create_model('efficientnet_b0.ra_in1k', pretrained=True)"):
        assert text in res.stderr


def test_torchvision_run_records_the_weights_and_resolves_auto_to_what_they_expect(tiny_data, tmp_path, monkeypatch):
    path, _ = put_in_torch_hub(monkeypatch, tmp_path, 'SqueezeNet', 'squeezenet1_1-b8a52dc0.pth')
    run = engine.fit(config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path / 'ck'),
                                  run_name='tv', pretrained='imagenet', **{**FAST, 'image_size': 0}))
    saved = json.load(open(os.path.join(run, 'config.json')))['used']
    assert saved['pretrained_weights'] == {'library': 'torchvision', 'name': 'SqueezeNet1_1_Weights.IMAGENET1K_V1',
                                           'file': str(path),
                                           'sha256': hashlib.sha256(path.read_bytes()).hexdigest()}
    assert (saved['image_size'], saved['normalize'], saved['attention']) == (224, 'imagenet', 'none')
    ckpt = torch.load(os.path.join(run, 'last.pth'), weights_only=True)
    assert ckpt['plan']['pretrained_weights'] == saved['pretrained_weights']


def test_timm_weights_load_from_the_hugging_face_cache_offline_and_frozen_layers_keep_them(tiny_data, tmp_path):
    import timm
    state = timm.create_model('efficientnet_b0', num_classes=1000).state_dict()
    path = put_in_hf_cache(tmp_path / 'hf', 'timm/efficientnet_b0.ra_in1k', state)
    res = run_cli('train', f'--train-data-root={tiny_data / "train"}', f'--checkpoint-dir={tmp_path / "ck"}',
                  '--run-name=timm', '--model=EfficientNet-B0', '--pretrained=imagenet', '--freeze-backbone',
                  *[f'--{k.replace("_", "-")}={v}' for k, v in FAST.items() if k != 'model'],
                  env={'HF_HOME': str(tmp_path / 'hf'), 'HF_HUB_OFFLINE': '1'})
    assert res.returncode == 0, res.stderr[-2000:]
    saved = json.load(open(tmp_path / 'ck' / 'timm' / 'config.json'))['used']
    assert saved['pretrained_weights']['name'] == 'timm/efficientnet_b0.ra_in1k'
    assert saved['pretrained_weights']['file'] == str(path) and saved['image_size'] == 32  # given: kept
    trained = torch.load(tmp_path / 'ck' / 'timm' / 'last.pth', weights_only=True)['model']
    backbone = [k for k in state if not k.startswith('classifier.')]
    assert any('running_mean' in k for k in backbone)
    for k in backbone:  # weights and batch-norm statistics as loaded: frozen layers stay in eval mode
        assert torch.equal(trained['net.' + k], state[k]), k


def test_asked_attention_on_published_weights_starts_as_the_identity_and_reloads(tmp_path, monkeypatch):
    put_in_torch_hub(monkeypatch, tmp_path, 'ResNet34', 'resnet34-b627a593.pth')
    assert models.resolve_attention('ResNet34', 'auto', pretrained='imagenet') == 'none'
    plain = models.build('ResNet34', 4, pretrained='imagenet').eval()
    gated = models.build('ResNet34', 4, pretrained='imagenet', attention='cbam').eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(gated.forward_features(x), plain.forward_features(x))
        gates = [m.gate for m in gated.modules() if getattr(m, 'gate', None) is not None]
        assert len(gates) == 16
        for g in gates:
            g.fill_(0.5)
        again = models.build('ResNet34', 4, attention='cbam').eval()  # as val / predict rebuild it
        again.load_state_dict(gated.state_dict())
        assert torch.equal(again(x), gated(x)) and not torch.equal(gated(x), plain(x))


def test_freeze_epochs_then_unfreeze_with_a_fresh_warmup_and_resume_across_the_switch(tiny_data, tmp_path):
    import timm
    source = timm.create_model('efficientnet_b0', num_classes=1000).state_dict()
    torch.save(source, tmp_path / 'source.pth')
    common = dict(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path / 'ck'),
                  pretrained_path=str(tmp_path / 'source.pth'), freeze_epochs=1,
                  **{**FAST, 'model': 'EfficientNet-B0'})
    full = engine.fit(config.parse(run_name='full', **{**common, 'max_epoch': 3}))
    part = engine.fit(config.parse(run_name='part', **{**common, 'max_epoch': 1}))
    frozen = torch.load(os.path.join(part, 'last.pth'), weights_only=True)['model']
    for k, v in source.items():
        if not k.startswith('classifier.'):
            assert torch.equal(frozen['net.' + k], v), k  # the first epoch trained the head only
    engine.fit(config.parse(resume=os.path.join(part, 'last.pth'), max_epoch=3))
    a = torch.load(os.path.join(full, 'last.pth'), weights_only=True)['model']
    b = torch.load(os.path.join(part, 'last.pth'), weights_only=True)['model']
    assert not torch.equal(a['net.conv_stem.weight'], frozen['net.conv_stem.weight'])  # then the backbone trained
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed across the switch = uninterrupted
    lrs = [float(line.split(',')[2]) for line in open(os.path.join(full, 'lr.csv'))]
    steps = len(lrs) // 3  # one epoch head-only, two after it
    # each part is a whole one-cycle schedule: annealed to ~0 at the switch, then up to near --lr again
    assert max(lrs[:steps]) > 0.5e-3 and lrs[steps - 1] < 1e-6 and max(lrs[steps:]) > 0.8e-3


def test_backbone_lr_mult_gives_the_backbone_its_own_rate_through_the_schedule():
    model = models.build('SqueezeNet', 3)
    cfg = config.parse(backbone_lr_mult=0.1, lr=0.01, max_epoch=15)
    opt = build_optimizer(model, cfg)
    head = {id(p) for p in model.head.parameters()}
    schedule = build_scheduler(opt, cfg, 4)
    for _ in range(5):
        opt.step()
        schedule.step_iter()
        for g in opt.param_groups:
            in_head = {id(p) in head for p in g['params']}
            assert len(in_head) == 1
            assert g['lr'] == pytest.approx(opt.param_groups[0]['lr'] * (1.0 if in_head.pop() else 0.1))
    assert opt.param_groups[0]['params'][0] is model.head.weight


@pytest.mark.parametrize('kwargs, message', [
    (dict(freeze_epochs=5, max_epoch=3), '--freeze-epochs must be within 0..3'),
    (dict(freeze_epochs=1, freeze_backbone=True), 'give one of them'),
    (dict(backbone_lr_mult=0), '--backbone-lr-mult must be positive'),
])
def test_fine_tuning_settings_refuse_what_cannot_work(kwargs, message):
    with pytest.raises(config.UserError, match=message):
        config.parse(**kwargs)


def test_pretrained_specs_that_do_not_fit_are_one_line_before_any_work(tmp_path):
    for args, message in [(['--pretrained=imagnet'], "unknown --pretrained='imagnet'"),
                          (['--pretrained=timm/resnet34.a1_in1k'],
                           'use --pretrained=imagenet, or --model=timm/resnet34'),
                          (['--model=EfficientNet-B0', '--pretrained=timm/resnet34.a1_in1k'],
                           'holds resnet34 weights, the model is EfficientNet-B0'),
                          (['--pretrained=imagenet', '--pretrained-path=x.pth'], 'give one of --pretrained and')]:
        res = run_cli('train', *args, f'--checkpoint-dir={tmp_path / "ck"}', cwd=tmp_path)
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'ck').exists()


def test_pseudo_rounds_retrain_a_pretrained_run_from_its_checkpoint(tiny_data, tmp_path, monkeypatch):
    from utils.curate import pseudo
    put_in_torch_hub(monkeypatch, tmp_path, 'SqueezeNet', 'squeezenet1_1-b8a52dc0.pth')
    run = engine.fit(config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path / 'ck'),
                                  run_name='tv', pretrained='imagenet', **FAST))
    results = pseudo.run(config.parse(load_path=os.path.join(run, 'best_model.pth'), rounds=1,
                                      unlabeled_root=str(tiny_data / 'test'), checkpoint_dir=str(tmp_path / 'ck'),
                                      num_workers=0, vis=False, max_epoch=1))
    assert len(results) == 2
    [trained] = (tmp_path / 'ck').glob('pseudo-*-train1')
    retrained = json.load(open(trained / 'config.json'))['used']
    assert retrained['pretrained_path'] == os.path.join(run, 'best_model.pth')
    assert retrained['pretrained_weights']['name'] == 'SqueezeNet1_1_Weights.IMAGENET1K_V1'  # the lineage stays
