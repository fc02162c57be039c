"""The RAM cache, batch augmentation on the device, and the GPU-path settings on the CPU."""
import dataclasses
import json
import os

import pytest
import torch
import torch.nn.functional as F

import config
from conftest import FAST, LEARNS, plan_for
from data import cache, loaders
from utils.train import engine


def test_cached_eval_tensors_equal_uncached_ones_at_the_working_size(tiny_data, capsys):
    plain = plan_for(train_data_root=str(tiny_data / 'train'), image_size=48, num_workers=0, cache='none')
    cached = plan_for(train_data_root=str(tiny_data / 'train'), image_size=48, num_workers=0, cache='ram')
    _, val_plain = loaders.build_train_val(plain)
    _, val_cached = loaders.build_train_val(cached)
    assert 'need 0.00 GiB' in capsys.readouterr().out  # the estimate is printed first
    assert len(val_plain) == len(val_cached) > 0
    for i in range(len(val_plain)):
        image, label = val_cached[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 48, 48)
        assert label == val_plain[i][1]
        assert torch.equal(cache.prepare_batch(image[None], plain, False)[0], val_plain[i][0])


def test_cache_refuses_with_the_figure_when_it_exceeds_available_memory(tiny_data):
    with pytest.raises(ValueError, match=r'--cache=ram needs 3352\.76 GiB but only .* GiB .*--cache=none'):
        plan_for(train_data_root=str(tiny_data / 'train'), image_size=200000, cache='ram')


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


def test_training_from_the_ram_cache_learns_and_writes_checkpoints_and_metrics(learnable_data, tmp_path):
    run_dir = engine.fit(config.parse(train_data_root=str(learnable_data), checkpoint_dir=str(tmp_path),
                                      run_name='cached', cache='ram', **LEARNS))
    assert os.path.exists(os.path.join(run_dir, 'best_model.pth'))
    assert run_rows(run_dir)[0]['val_acc'] >= 0.75  # chance is 1/3; this run gets 9 of 9 right


def test_unknown_amp_value_says_which_ones_exist():
    with pytest.raises(ValueError, match='--amp=.*auto, off, bf16, fp16'):
        config.parse(amp='fp8')


def test_batch_jitter_matches_torchvision_per_image():
    from torchvision.transforms import functional as TF
    torch.manual_seed(0)
    images = torch.rand(6, 3, 20, 20)
    brightness = torch.tensor([0.8, 1.0, 1.2, 0.9, 1.1, 0.85]).view(-1, 1, 1, 1)
    contrast = torch.tensor([1.2, 0.8, 1.0, 1.15, 0.9, 0.8]).view(-1, 1, 1, 1)
    out = cache.adjust(images.clone(), brightness, contrast)
    for i in range(len(images)):
        expected = TF.adjust_contrast(TF.adjust_brightness(images[i], float(brightness[i])), float(contrast[i]))
        assert torch.allclose(out[i], expected, atol=1e-6)
    drawn = cache.jitter_batch(images.clone(), 0.2)
    assert drawn.min() >= 0 and drawn.max() <= 1
    assert len({round(float((drawn[i] - images[i]).abs().mean()), 6) for i in range(6)}) == 6  # per image


def test_batch_erasing_blanks_one_box_of_the_right_size_per_chosen_image():
    torch.manual_seed(0)
    images = torch.ones(400, 3, 32, 32)
    assert torch.equal(cache.erase_batch(images, 0.0), images)
    out = cache.erase_batch(images, 0.5)
    erased = 0
    for image in out:
        zero = image[0] == 0
        assert torch.equal(zero, (image == 0).all(0))  # every channel, the same pixels
        if zero.any():
            erased += 1
            rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            assert int(zero.sum()) == h * w  # one filled rectangle
            assert 0.02 * 1024 * 0.8 <= h * w <= 0.33 * 1024 * 1.25  # area share in scale, up to rounding
    assert 160 <= erased <= 240  # p = 0.5 of 400 images


def test_batch_flip_of_every_class_flips_about_half_of_the_images_whole():
    from data.mix import flip_by_class
    torch.manual_seed(0)
    images = torch.randint(0, 256, (400, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 3, (400,))
    out, same = flip_by_class(images, labels, torch.tensor([0, 1, 2]))  # --hflip=true: every class, itself
    flipped = [bool(torch.equal(o, i.flip(2))) for o, i in zip(out, images)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, images)) and torch.equal(same, labels)
    assert 160 <= sum(flipped) <= 240


def test_cached_batches_get_every_default_augmentation_and_the_dataset_normalisation(tiny_data):
    from data import transforms
    cfg = plan_for(train_data_root=str(tiny_data / 'train'), image_size=32, num_workers=0, cache='ram')
    assert cfg.jitter > 0 and cfg.erasing > 0 and cfg.normalize == 'dataset'
    train_set, val_set = loaders.build_train_val(cfg)
    cfg = dataclasses.replace(cfg, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3))
    plain = transforms.eval_transform(cfg, 32)
    image = val_set[0][0]
    from PIL import Image
    expected = plain(Image.fromarray(image.permute(1, 2, 0).numpy()))
    assert torch.allclose(cache.finish_batch(image[None], torch.device('cpu'), cfg, False)[0], expected, atol=1e-6)
    batch = torch.stack([train_set[i][0] for i in range(len(train_set))])
    torch.manual_seed(0)
    out = cache.finish_batch(batch, torch.device('cpu'), cfg, True)
    zero = (out == 0).all(1).flatten(1).any(1)  # erased pixels are 0 in every channel
    assert out.dtype == torch.float32 and zero.any() and not zero.all()
