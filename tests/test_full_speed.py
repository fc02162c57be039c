"""Full speed by default: the cache chosen automatically, batches served whole, the random resized crop on
batches, device-side loss and accuracy, and (where CUDA exists) a steady-state step that never waits for the GPU."""
import dataclasses

import pytest
import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

import config
import models
from conftest import FAST, plan_for, run_cli
from data import cache, loaders
from data.dataset import BadFileLog
from data.samplers import build_sampler
from utils.train import engine
from utils.train import precision as fast
from utils.train import step as tricks
from utils.train.optim import Schedule, build_optimizer, build_scheduler
from utils.dashboard.windows import RunDashboard


def settings(tiny_data, **extra):
    """The plan of a run of these settings on tiny_data: every auto decided, the cache too."""
    return plan_for(train_data_root=str(tiny_data / 'train'), **{**FAST, **extra})


def undecided(tiny_data, **extra):
    """The plan of these settings on the CPU before the cache is decided (what cache.choose is given)."""
    return dataclasses.replace(config.Plan.of(config.parse(train_data_root=str(tiny_data / 'train'),
                                                           **{**FAST, **extra})), device='cpu')


@pytest.mark.parametrize('augment', ['basic', 'resized'])
def test_auto_caches_in_ram_when_the_images_fit_and_says_so(tiny_data, capsys, augment):
    cfg = settings(tiny_data, augment=augment, hflip=True)
    assert config.DefaultConfig().cache == 'auto' and 'cache' in cfg.machine_chose
    train_set, val_set = loaders.build_train_val(cfg)
    assert cfg.cache == 'ram' and isinstance(train_set, cache.CachedImages) and isinstance(val_set, cache.CachedImages)
    assert 'cache: ram (auto)' in capsys.readouterr().out
    images, labels, bad = next(iter(loaders.train_loader(train_set, cfg, None, torch.Generator())))
    out = cache.finish_batch(images, torch.device('cpu'), cfg, True)
    assert out.dtype == torch.float32 and out.shape == (len(labels), 3, 32, 32)


@pytest.mark.parametrize('extra, reason', [
    (dict(augment='randaugment'), '--augment=randaugment runs per image'),
    (dict(image_size=200000), 'more than 50% of the available memory'),
])
def test_auto_streams_from_disk_with_one_line_saying_why(tiny_data, capsys, extra, reason):
    assert cache.choose(undecided(tiny_data, **extra), 30) == 'none'
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('cache: none')]
    assert len(lines) == 1 and reason in lines[0]


def test_auto_caches_with_upsampled_hard_examples_too(tiny_data, capsys):
    """The copies are region crops of the cached images (data/hard.py), so --upsample-hard keeps the cache."""
    assert cache.choose(undecided(tiny_data, upsample_hard=2, hard_list='hard.csv'), 30) == 'ram'
    assert 'cache: ram (auto)' in capsys.readouterr().out


def test_an_unknown_compile_mode_is_refused_with_the_choices():
    with pytest.raises(config.ConfigError, match="--compile-mode='fast'.*default, reduce-overhead, max-autotune"):
        config.parse(compile_mode='fast')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a machine without CUDA')
@pytest.mark.parametrize('value, message', [('gpu', '--cache=gpu needs CUDA and --use-gpu'),
                                            ('disk', "unknown --cache='disk'")])
def test_a_cache_that_cannot_work_is_one_line_before_a_run_directory(tiny_data, tmp_path, value, message):
    res = run_cli('train', f'--train-data-root={tiny_data / "train"}', f'--checkpoint-dir={tmp_path / "ck"}',
                  f'--cache={value}', '--vis=false')
    assert res.returncode == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / 'ck').exists()


def test_cached_batches_come_whole_and_leave_unreadable_files_out(tiny_data):
    (tiny_data / 'train' / '00001' / 'zz_broken.png').write_bytes(b'not an image')
    train_set = next(s for s in loaders.build_train_val(settings(tiny_data)) if 'zz_broken.png' in str(s.samples))
    broken = [i for i, (path, _) in enumerate(train_set.samples) if path.endswith('zz_broken.png')]
    assert broken and list(train_set.bad) == broken
    indices = list(range(len(train_set)))
    images, labels, bad = loaders.collate(train_set.__getitems__(indices))
    good = [i for i in indices if i not in broken]
    assert torch.equal(images, torch.stack([train_set[i][0] for i in good]))
    assert labels.tolist() == [train_set.samples[i][1] for i in good]
    assert [path for path, _ in bad] == [train_set.samples[broken[0]][0]]


def test_batch_resized_crop_draws_boxes_as_torchvision_does():
    torch.manual_seed(0)
    n, side, scale, ratio = 4000, 32, (0.6, 1.0), (3 / 4, 4 / 3)
    top, left, h, w, found = cache.draw_boxes(n, side, side, scale, ratio, 10, torch.device('cpu'), inclusive=True)
    assert found.all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= side).all() and (left + w <= side).all()
    share = (h * w).float() / side ** 2
    assert share.min() >= 0.55 and share.max() <= 1.0  # 0.6..1, up to rounding the sides to pixels
    aspect = w.float() / h.float()
    assert aspect.min() >= 0.7 and aspect.max() <= 1.4  # 3/4..4/3, up to rounding
    assert len(set(zip(top.tolist(), left.tolist()))) > 20  # per image
    image = torch.zeros(3, side, side)
    reference = [T.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)]
    ref_share = torch.tensor([h * w for _, _, h, w in reference], dtype=torch.float) / side ** 2
    ref_aspect = torch.tensor([w / h for _, _, h, w in reference])
    assert abs(share.mean() - ref_share.mean()) < 0.01 and abs(aspect.mean() - ref_aspect.mean()) < 0.01


def test_batch_crop_resize_equals_torchvision_resized_crop_inside_the_border():
    torch.manual_seed(1)
    images = torch.rand(5, 3, 32, 32)
    top, left = torch.tensor([0, 3, 7, 2, 0]), torch.tensor([0, 5, 1, 9, 4])
    h, w = torch.tensor([32, 26, 20, 29, 25]), torch.tensor([32, 24, 25, 21, 28])
    out = cache.crop_resize(images, top, left, h, w)
    for k in range(len(images)):
        expected = TF.resized_crop(images[k], int(top[k]), int(left[k]), int(h[k]), int(w[k]), [32, 32],
                                   InterpolationMode.BILINEAR, antialias=False)
        # the outermost output pixels sample half a pixel beyond the box: roi_align reads the neighbouring
        # image pixel there, torchvision the box's edge pixel
        assert torch.allclose(out[k, :, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-5), k
    assert torch.allclose(out[0], images[0], atol=1e-6)  # the whole image, unchanged


def test_epoch_loss_and_accuracy_are_the_means_over_its_images(tiny_data, tmp_path):
    cfg = settings(tiny_data, augment='none', hflip=False, jitter=0.0, erasing=0.0, mixup_prob=0.0, print_freq=2)
    train_set, _ = loaders.build_train_val(cfg)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: the means can be recomputed
    loader = loaders.train_loader(train_set, cfg, None, torch.Generator())
    criterion = torch.nn.CrossEntropyLoss()
    vis = RunDashboard(cfg, str(tmp_path), train_set.classes, enabled=False)
    result = engine.train_one_epoch(model, loader, criterion, optimizer, Schedule(None, 'none'), torch.device('cpu'),
                                    0, cfg, vis, BadFileLog())
    images = cache.finish_batch(train_set.images, torch.device('cpu'), cfg, True)
    labels = torch.tensor(train_set.targets)
    with torch.no_grad():
        output = model(images)
    assert result['images'] == len(train_set) and len(loader) >= 3  # several reads (print_freq=2) and the end
    assert result['loss'] == pytest.approx(criterion(output, labels).item(), rel=1e-5)
    assert result['acc'] == pytest.approx((output.argmax(1) == labels).float().mean().item())


NO_CUDA = 'no CUDA device here: this checks that a training step never waits for the GPU (bash benchmarks/gpu.sh)'


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize('cache_kind', ['gpu', 'ram'])
def test_a_steady_state_training_step_never_waits_for_the_gpu(tiny_data, tmp_path, cache_kind):
    # the defaults (ResNet34 + CBAM, Mixup, jitter, erasing, label smoothing, onecycle) plus CutMix, EMA, clipping
    cfg = settings(tiny_data, model='ResNet34', use_gpu=True, cache=cache_kind, mixup_prob=0.5, cutmix_prob=0.5,
                   ema=True, clip_grad=1.0, print_freq=1000)
    train_set, _ = loaders.build_train_val(cfg)
    assert cfg.cache == cache_kind
    device = torch.device('cuda')
    model = models.build(cfg.model, len(train_set.classes), attention=cfg.attention).to(device)
    net, precision = fast.setup(model, cfg, device)
    generator = torch.Generator().manual_seed(0)
    loader = loaders.train_loader(train_set, cfg, build_sampler(train_set.targets, cfg, generator), generator)
    criterion = tricks.build_criterion(cfg, train_set.targets, len(train_set.classes)).to(device)
    optimizer = build_optimizer(model, cfg)
    schedule = build_scheduler(optimizer, cfg, tricks.steps_per_epoch(len(loader), cfg))
    trainer = tricks.Trainer(model, optimizer, schedule, cfg, None, str(tmp_path), precision)
    vis = RunDashboard(cfg, str(tmp_path), train_set.classes, enabled=False)
    # warm-up epoch: cuDNN autotuning, the allocator, every batch shape
    engine.train_one_epoch(net, loader, criterion, optimizer, schedule, device, 0, cfg, vis, BadFileLog(), precision,
                           trainer)
    running = tricks.Running(device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for i, (images, labels, bad) in enumerate(loader):  # the loader's batches are part of the step
            tricks.train_step(net, images, labels, criterion, trainer, running, cfg, vis, (i, len(loader), 1))
        with pytest.raises(RuntimeError):  # the check is live: a read waits for the device
            running.read()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    loss, acc, _ = running.read()
    assert running.seen == len(train_set) and loss > 0


def test_checkpoints_are_written_from_a_host_copy_in_order_and_a_failed_write_is_raised(tmp_path):
    from utils.train.checkpoint_writer import CheckpointWriter, to_host
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': 0}
    copy = to_host(state)
    expected = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # the next epoch trains on while the copy is written
    writer = CheckpointWriter()
    path = tmp_path / 'run' / 'last.pth'
    writer.save(copy, path)
    writer.save({**copy, 'epoch': 1}, path)  # the later write lands last
    writer.wait()
    saved = torch.load(path, weights_only=True)
    assert saved['epoch'] == 1 and torch.equal(saved['model']['weight'], expected)
    assert saved['optimizer']['state'][0]['exp_avg'].shape == (2, 3)
    (tmp_path / 'file').write_text('a file where a folder should be')
    writer.save(copy, tmp_path / 'file' / 'last.pth')
    with pytest.raises(config.UserError, match='could not write .*file'):  # one line, raised at the wait
        writer.wait()
    writer.close()
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == ['last.pth']  # no temporary file left
