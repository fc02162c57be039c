import zipfile

import pytest
import torch

import config
import models
from utils import io as checkpoint

NAMES = models.list_models()


@pytest.mark.parametrize('size', [32, 64])
@pytest.mark.parametrize('name', NAMES)
def test_every_model_classifies_32_and_64_px_into_62_classes(name, size):
    torch.manual_seed(0)
    model = models.build(name, 62).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
        feats = model.forward_features(torch.randn(2, 3, size, size))
    assert out.shape == (2, 62) and torch.isfinite(out).all()
    assert feats.ndim == 2 and feats.shape[1] == model.head.weight.shape[1]


def test_names_are_case_insensitive_and_unknown_names_are_listed():
    assert models.build('resnet34', 3).model_name == 'ResNet34'
    with pytest.raises(ValueError, match='choose one of: AlexNet, SqueezeNet'):
        models.build('ResNet35', 3)


def test_pretrained_weights_load_from_a_local_file_and_the_head_is_replaced(tmp_path, capsys):
    source = models.build('ResNet34', 1000)
    torch.save(source.net.state_dict(), tmp_path / 'resnet34.pth')  # a torchvision-style weights file
    model = models.build('ResNet34', 7, pretrained_path=str(tmp_path / 'resnet34.pth'))
    assert torch.equal(model.net.layer1[0].conv1.weight, source.net.layer1[0].conv1.weight)
    assert model.net.fc.weight.shape == (7, 512)
    assert 'head replaced for 7 classes' in capsys.readouterr().out


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(models.build('AlexNet', 5).net.state_dict(), tmp_path / 'alex.pth')
    with pytest.raises(ValueError, match='another architecture'):
        models.build('ResNet34', 5, pretrained_path=str(tmp_path / 'alex.pth'))


def test_a_checkpoint_of_another_class_count_is_refused_with_both_counts():
    ckpt = {'model': models.build('SqueezeNet', 4).state_dict(), 'model_name': 'SqueezeNet', 'num_classes': 4}
    checkpoint.check_compatible(ckpt, 'SqueezeNet', 4, 'sq.pth')
    with pytest.raises(ValueError, match='sq.pth was trained for 4 classes, this data has 5'):
        checkpoint.check_compatible(ckpt, 'SqueezeNet', 5, 'sq.pth')


def test_checkpoints_are_written_atomically_and_read_without_unpickling_code(tmp_path):
    path = tmp_path / 'c.pth'
    checkpoint.save_checkpoint({'x': torch.ones(2), 'epoch': 3}, path)
    assert checkpoint.load_checkpoint(path)['epoch'] == 3
    assert [p.name for p in tmp_path.iterdir()] == ['c.pth']  # no temporary left behind

    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    torch.save({'x': Evil()}, tmp_path / 'evil.pth')
    with pytest.raises(config.UserError, match='not a readable checkpoint'):
        checkpoint.load_checkpoint(tmp_path / 'evil.pth')
    with pytest.raises(config.UserError, match='does not exist'):
        checkpoint.load_checkpoint(tmp_path / 'missing.pth')


def test_only_a_damaged_or_foreign_file_reads_as_not_a_readable_checkpoint(tmp_path):
    good = tmp_path / 'good.pth'
    checkpoint.save_checkpoint({'model': {'w': torch.arange(100.0)}, 'epoch': 3}, good)
    data = good.read_bytes()
    with zipfile.ZipFile(tmp_path / 'foreign.zip', 'w') as z:
        z.writestr('notes.txt', 'not a checkpoint')
    files = {'empty.pth': b'', 'cut.pth': data[:len(data) // 2], 'junk.pth': b'hello, not a checkpoint',
             'text.pth': b'{"model": 1}', 'foreign.pth': (tmp_path / 'foreign.zip').read_bytes()}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(config.UserError, match=f'{name} is not a readable checkpoint'):
            checkpoint.load_checkpoint(tmp_path / name)
    # an intact file and an error of the caller's (an unknown device): the error is not the file's
    with pytest.raises(RuntimeError, match='nodevice') as caught:
        checkpoint.load_checkpoint(good, map_location='nodevice')
    assert not isinstance(caught.value, config.UserError)


def test_the_model_names_config_checks_are_the_registry_s():
    assert list(config.MODEL_NAMES) == models.list_models()


@pytest.mark.parametrize('name', ['EfficientNet-B0', 'SE-ResNeXt50_32x4d', 'timm/mobilenetv3_small_100'])
def test_a_timm_model_from_scratch_starts_from_small_logits_whatever_the_class_count(name):
    # timm initialises an EfficientNet classifier uniform in +-1/sqrt(classes), made for 1000: with 10 classes the
    # logits start with a std of ~3.5 and the loss at ~6.5, not ln 10, and training from scratch stalled near chance
    torch.manual_seed(0)
    model = models.build(name, 10)
    head = model.net.get_classifier()
    assert head.weight.abs().max() <= 1 / head.in_features ** 0.5  # PyTorch's default initialisation
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    assert torch.nn.functional.cross_entropy(model.train()(x), y) < 3.0  # ln 10 = 2.30
