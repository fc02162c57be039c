"""--stem: the ImageNet and the small-image forms of each model family, the auto rule, and the stem stored in the
checkpoint so that evaluation and resume rebuild the model that was trained."""
import json
import os

import pytest
import torch

import config
import models
from conftest import FAST
from utils.train import engine
from utils.evaluate import loop

FAMILIES = ['AlexNet', 'SqueezeNet', 'ResNet34', 'ResNet101', 'ResNeSt50', 'SE-ResNeXt50_32x4d', 'timm/resnet18d']
# side of the last feature map (before the global pooling) for (stem, input side): the small stem keeps 4x the
# positions of the ImageNet one, so that a 32 px image still has 4x4 of them, as the CIFAR ResNets do
LAST_SIDE = {('imagenet', 32): 1, ('small', 32): 4, ('imagenet', 224): 7, ('small', 224): 28}


def last_feature_map(name, stem, side):
    """(shape of the last feature map, shape of the output) of a 2-image batch, computed on the meta device."""
    with torch.device('meta'):
        model = models.build(name, 10, stem=stem)
        last = model.net.features if hasattr(model.net, 'features') else model.net.layer4
        seen = {}
        last.register_forward_hook(lambda module, inputs, output: seen.update(shape=tuple(output.shape)))
        out = model(torch.zeros(2, 3, side, side))
    return seen['shape'], tuple(out.shape)


@pytest.mark.parametrize('name', FAMILIES)
@pytest.mark.parametrize('stem, side', list(LAST_SIDE))
def test_each_family_keeps_four_times_the_positions_with_the_small_stem(name, stem, side):
    features, out = last_feature_map(name, stem, side)
    expected = 13 if (name, stem, side) == ('SqueezeNet', 'imagenet', 224) else LAST_SIDE[stem, side]
    assert features[2:] == (expected, expected) and out == (2, 10)


def test_the_small_efficientnet_has_its_first_convolution_at_stride_1_and_twice_the_side():
    for name in ('EfficientNet-B0', 'timm/mixnet_s'):  # timm's efficientnet module
        net = models.build(name, 10, stem='small').net
        assert net.conv_stem.stride == (1, 1) and models.has_small_stem(name)
    for side, (plain, small) in {32: (1, 2), 224: (7, 14)}.items():
        with torch.device('meta'):
            shapes = [models.build('EfficientNet-B0', 10, stem=stem).net.forward_features(torch.zeros(2, 3, side, side))
                      .shape[2:] for stem in ('imagenet', 'small')]
        assert shapes == [(plain, plain), (small, small)]


def test_the_small_stem_is_a_3x3_stride_1_convolution_without_max_pool():
    for name in ('ResNet34', 'timm/resnet18'):
        net = models.build(name, 10, stem='small').net
        assert (net.conv1.kernel_size, net.conv1.stride) == ((3, 3), (1, 1))
        assert isinstance(net.maxpool, torch.nn.Identity)
    deep = models.build('ResNeSt50', 10, stem='small').net  # its deep stem starts with a 3x3 convolution already
    assert (deep.conv1[0].kernel_size, deep.conv1[0].stride) == ((3, 3), (1, 1))
    for name in ('AlexNet', 'SqueezeNet'):  # plain networks: the small form also normalises every convolution
        features = models.build(name, 10, stem='small').net.features
        assert (_first_conv(features).kernel_size, _first_conv(features).stride) == ((3, 3), (1, 1))
        convs = [m for m in features.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in features.modules()) > 0


def test_auto_is_small_for_alexnet_and_squeezenet_from_scratch_up_to_96_px_and_imagenet_otherwise():
    for name in ('SqueezeNet', 'AlexNet', 'EfficientNet-B3', 'timm/mixnet_s'):  # near chance at 32 px (zoo.py)
        assert [models.resolve_stem(name, 'auto', side) for side in (32, 64, 96, 128, 224)] == \
            ['small', 'small', 'small', 'imagenet', 'imagenet']
    assert models.resolve_stem('SqueezeNet', 'auto', 32, pretrained='imagenet') == 'imagenet'
    for name in ('ResNet34', 'ResNet101', 'ResNeSt50', 'timm/resnet18'):  # learns at 32 px; small costs 5-10x
        assert models.resolve_stem(name, 'auto', 32) == 'imagenet'
        assert models.resolve_stem(name, 'small', 32) == 'small'  # on request
    assert models.resolve_stem('timm/mobilenetv3_small_100', 'auto', 32) == 'imagenet'  # it has no small form
    assert models.resolve_stem('SqueezeNet', 'auto', 0) == 'auto'  # decided once the image size is known
    assert models.resolve_stem('SqueezeNet', 'imagenet', 32) == 'imagenet'
    assert config.parse().stem == 'auto'  # the default


def test_auto_from_a_weights_file_takes_its_stem(tmp_path):
    plain = str(tmp_path / 'torchvision_resnet34.pth')  # weights from elsewhere: a bare state_dict, ImageNet stem
    torch.save(models.build('ResNet34', 10).net.state_dict(), plain)
    assert models.resolve_stem('ResNet34', 'auto', 32, pretrained_path=plain) == 'imagenet'
    ours = str(tmp_path / 'small.pth')
    torch.save({'model': {}, 'config': {'stem': 'small'}}, ours)
    assert models.resolve_stem('ResNet34', 'auto', 224, pretrained_path=ours) == 'small'


def test_a_small_stem_the_model_or_the_weights_cannot_take_is_one_line():
    with pytest.raises(config.UserError, match=r'^--stem=small works with the ResNet and EfficientNet families, '
                                               r'AlexNet and SqueezeNet, not timm/mobilenetv3_small_100; use '
                                               r'--stem=imagenet$'):
        models.resolve_stem('timm/mobilenetv3_small_100', 'small', 32)
    with pytest.raises(config.UserError, match=r'trained with the ImageNet stem; use --stem=imagenet'):
        models.resolve_stem('ResNet34', 'small', 32, pretrained='imagenet')


@pytest.mark.parametrize('args, message', [
    (['--stem=bogus'], "error: unknown --stem='bogus'; choose one of: auto, imagenet, small"),
    (['--stem=small', '--model=timm/mobilenetv3_small_100'],
     'error: --stem=small works with the ResNet and EfficientNet families, AlexNet and SqueezeNet, not '
     'timm/mobilenetv3_small_100; use --stem=imagenet'),
])
def test_a_bad_stem_stops_with_one_line_before_anything_is_written(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data here: a late check would first write the digits demo
    import main
    assert main.main(['train', *args, '--vis=false']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(message)
    assert list(tmp_path.iterdir()) == []


def _fit(tmp_path, data, name, **kw):
    settings = {**FAST, 'stem': 'auto', 'html_report': False, **kw}
    return engine.fit(config.parse(train_data_root=str(data), checkpoint_dir=str(tmp_path), run_name=name,
                                   **settings))


def _first_conv(module):
    return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))


def test_the_resolved_stem_is_stored_and_rebuilt_by_evaluation_and_resume(tiny_data, tmp_path):
    run = _fit(tmp_path, tiny_data / 'train', 'auto32')  # SqueezeNet from scratch at 32 px: auto -> small
    assert json.load(open(os.path.join(run, 'config.json')))['used']['stem'] == 'small'
    best = os.path.join(run, 'best_model.pth')
    assert torch.load(best, weights_only=True)['plan']['stem'] == 'small'
    for extra in ({}, {'stem': 'auto'}, {'stem': 'small'}):  # what the weights were made with
        model, cfg, ckpt, _ = loop.load_for_eval(config.parse(load_path=best, num_workers=0, **extra))
        assert cfg.stem == 'small' and _first_conv(model.net).stride == (1, 1)
    # a --stem given to evaluation or to a resume cannot change the architecture of the weights: one line
    for cfg in (config.parse(load_path=best, stem='imagenet'), config.parse(resume=os.path.join(run, 'last.pth'),
                                                                              stem='imagenet')):
        with pytest.raises(config.UserError, match='--stem=small; --stem=imagenet contradicts it'):
            (loop.load_for_eval if cfg.load_path else engine.fit)(cfg)
    result = loop.evaluate_checkpoint(config.parse(load_path=best, num_workers=0, vis=False), 'val')
    assert result['top1'] == pytest.approx(ckpt['best_metric'])
    resumed = engine.fit(config.parse(resume=os.path.join(run, 'last.pth'), max_epoch=2))
    last = torch.load(os.path.join(resumed, 'last.pth'), weights_only=True)
    assert (last['epoch'], last['plan']['stem']) == (1, 'small')


def test_a_checkpoint_written_before_the_stem_setting_loads_and_resumes_as_imagenet(tiny_data, tmp_path):
    run = _fit(tmp_path, tiny_data / 'train', 'old', stem='imagenet')
    settings = {name for name, *_ in config.settings()}
    for name in ('best_model.pth', 'last.pth'):  # as a checkpoint of an earlier version: settings, no 'stem' key
        path = os.path.join(run, name)
        state = torch.load(path, weights_only=True)
        plan = state.pop('plan')
        del state['asked']
        state['config'] = {k: v for k, v in plan.items() if k in settings and k != 'stem'}
        state['normalization'] = {'mean': plan['mean'], 'std': plan['std']}
        torch.save(state, path)
    model, cfg, _, _ = loop.load_for_eval(config.parse(load_path=os.path.join(run, 'best_model.pth'),
                                                         num_workers=0))
    assert cfg.stem == 'imagenet' and _first_conv(model.net).stride == (2, 2)
    resumed = engine.fit(config.parse(resume=os.path.join(run, 'last.pth'), max_epoch=2))
    assert torch.load(os.path.join(resumed, 'last.pth'), weights_only=True)['plan']['stem'] == 'imagenet'
