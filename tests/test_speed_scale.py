"""The RAM cache, batch augmentation on the device, and the GPU-path settings on the CPU."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

import config
from conftest import FAST
from data import cache, loaders
from utils import engine, fast


def test_cached_eval_tensors_equal_uncached_ones_at_the_working_size(tiny_data, capsys):
    plain = config.parse(train_data_root=str(tiny_data / 'train'), image_size=48, num_workers=0)
    cached = config.parse(train_data_root=str(tiny_data / 'train'), image_size=48, num_workers=0, cache='ram')
    _, val_plain = loaders.build_train_val(plain)
    _, val_cached = loaders.build_train_val(cached)
    assert 'need 0.00 GiB' in capsys.readouterr().out  # the estimate is printed first
    assert len(val_plain) == len(val_cached) > 0
    for i in range(len(val_plain)):
        image, label = val_cached[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 48, 48)
        assert label == val_plain[i][1]
        assert torch.equal(cache.normalize(image[None])[0], val_plain[i][0])


def test_cache_refuses_with_the_figure_when_it_exceeds_available_memory(tiny_data):
    cfg = config.parse(train_data_root=str(tiny_data / 'train'), image_size=200000, cache='ram')
    with pytest.raises(ValueError, match=r'--cache=ram needs 3352\.76 GiB but only .* GiB .*--cache=none'):
        loaders.build_train_val(cfg)


def test_batch_augmentation_is_an_edge_padded_crop_drawn_per_image():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = cache.augment_batch(images, 'basic')
    pad = 4
    padded = F.pad(images.float(), (pad,) * 4, mode='replicate').to(torch.uint8)
    offsets = []
    for n in range(len(images)):
        found = [(i, j) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
                 if torch.equal(padded[n, :, i:i + 32, j:j + 32], out[n])]
        assert found, f'image {n} is not a crop of its padded self'
        offsets.append(found[0])
    assert len(set(offsets)) > 4  # drawn per image, not once per batch
    assert torch.equal(cache.augment_batch(images, 'none'), images)


def run_rows(run_dir):
    rows = [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]
    return [{k: v for k, v in r.items() if k not in ('seconds', 'images_per_s')} for r in rows]


def test_amp_and_channels_last_settings_are_noops_on_the_cpu(tiny_data, tmp_path, capsys):
    base = dict(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path), **FAST)
    plain = engine.fit(config.parse(run_name='plain', **base))
    asked = engine.fit(config.parse(run_name='asked', amp='fp16', channels_last='on', cudnn_benchmark=True, **base))
    assert 'apply on CUDA only' in capsys.readouterr().out
    assert run_rows(plain) == run_rows(asked)


def test_training_from_the_ram_cache_writes_checkpoints_and_metrics(tiny_data, tmp_path):
    run_dir = engine.fit(config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path),
                                      run_name='cached', cache='ram', **FAST))
    assert os.path.exists(os.path.join(run_dir, 'best_model.pth'))
    assert 0 <= run_rows(run_dir)[0]['val_acc'] <= 1


def test_unknown_amp_value_says_which_ones_exist():
    with pytest.raises(ValueError, match='--amp=.*auto, off, bf16, fp16'):
        fast.check(config.parse(amp='fp8'))
