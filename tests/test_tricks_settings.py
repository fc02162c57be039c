"""Each training trick as a setting: samplers, class weights, augmentation, optimizers, schedules, backbones,
attention, frozen backbone, accumulation, clipping, EMA and an exact resume."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import config
import models
from conftest import FAST, crop_box, gradient_image, plan_for, write_class_folders
from data import transforms
from data.samplers import build_sampler
from models import pretrained
from utils.train import engine
from utils.evaluate import loop
from utils.train import step as tricks
from utils.train.losses import class_weights
from utils.train.optim import build_optimizer, build_scheduler, warmup_cosine_factor
from utils.dashboard.windows import unnormalize

LONG_TAIL = [0] * 800 + [1] * 160 + [2] * 40  # 20x imbalance


@pytest.mark.parametrize('name', ['weighted', 'imbalanced'])
def test_balanced_samplers_draw_each_class_near_uniformly(name):
    torch.manual_seed(0)
    sampler = build_sampler(LONG_TAIL, config.parse(sampler=name), torch.Generator().manual_seed(0))
    drawn = []
    for _ in range(10):
        drawn += [LONG_TAIL[i] for i in sampler]
    share = torch.bincount(torch.tensor(drawn), minlength=3).float() / len(drawn)
    assert len(drawn) == 10 * len(LONG_TAIL)
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.03), share


def test_shuffle_sampler_keeps_the_class_shares():
    drawn = [LONG_TAIL[i] for i in build_sampler(LONG_TAIL, config.parse(), torch.Generator().manual_seed(0))]
    assert sorted(drawn) == LONG_TAIL


def test_class_weight_setting_reaches_the_loss():
    cfg = config.parse(loss='label_smooth', class_weight='effective_number', cb_beta=0.99)
    criterion = tricks.build_criterion(cfg, LONG_TAIL, 3)
    assert torch.allclose(criterion.weight, class_weights([800, 160, 40], 'effective_number', 0.99))
    joint = tricks.build_criterion(config.parse(loss='joint', class_weight='inverse', joint_weights='0.3,0.7'),
                                   LONG_TAIL, 3)
    assert (joint.first_weight, joint.second_weight) == (0.3, 0.7)
    assert torch.allclose(joint.first.weight, class_weights([800, 160, 40], 'inverse'))


NOISE = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)  # every 40 x 40 window unique


def augmented(preset, image, draws=12):
    """`draws` outputs of the preset's training transform (no jitter, erasing or flip), un-normalised to HWC."""
    cfg = config.Plan.of(config.parse(augment=preset, jitter=0, erasing=0))
    transform = transforms.train_transform(cfg, image.width)
    torch.manual_seed(0)
    return [unnormalize(transform(image)[None], *transforms.norm_stats(cfg))[0].transpose(1, 2, 0)
            for _ in range(draws)]


def shifts(out, reach, mode):
    """The offsets (dy, dx), each within +-reach, by which NOISE moved gives `out` (edges padded by `mode`)."""
    n = len(NOISE)
    padded = np.pad(NOISE, ((reach, reach), (reach, reach), (0, 0)), mode=mode).astype(int)
    return [(reach - i, reach - j) for i in range(2 * reach + 1) for j in range(2 * reach + 1)
            if np.abs(padded[i:i + n, j:j + n] - out).max() <= 1]


def test_augment_none_leaves_the_image_as_resize_and_normalise_give_it():
    assert all(shifts(out, 0, 'edge') == [(0, 0)] for out in augmented('none', Image.fromarray(NOISE)))


def test_augment_basic_shifts_the_content_within_an_edge_padded_eighth():
    moved = [shifts(out, 40 // 8, 'edge') for out in augmented('basic', Image.fromarray(NOISE))]
    assert all(len(m) == 1 for m in moved)
    assert len({m[0] for m in moved}) > 4  # a new offset per draw


def test_augment_affine_translates_by_at_most_5_percent_filling_with_black():
    moved = [shifts(out, 2, 'constant') for out in augmented('affine', Image.fromarray(NOISE))]  # 5 % of 40 px
    assert all(len(m) == 1 for m in moved)
    assert len({m[0] for m in moved}) > 4 and any(m[0] != (0, 0) for m in moved)


def test_augment_resized_crops_60_to_100_percent_of_the_area_and_scales_it_back():
    image = gradient_image(40)
    boxes = [crop_box(out, image) for out in augmented('resized', image)]
    assert None not in boxes
    areas = [h * w / 40 ** 2 for _, _, h, w in boxes]
    assert all(0.6 * 0.95 <= a <= 1 for a in areas) and min(areas) < 0.8  # up to the rounding of the box sides


@pytest.mark.parametrize('preset', ['randaugment', 'trivialaugment'])
def test_augment_policies_change_the_pixels_beyond_a_shift(preset):
    outs = augmented(preset, Image.fromarray(NOISE), draws=20)
    assert all(out.shape == NOISE.shape for out in outs)
    changed = sum(not shifts(out, 40 // 8, 'edge') for out in outs)
    assert changed >= 10, changed  # the policy's operation (a few of them are the identity or near it)


def test_hflip_is_auto_by_default_and_no_per_image_transform_flips():
    # flips happen per class on the training batch (data/mix.py flip_by_class, tests/test_flips.py), for both the
    # per-image and the cached pipeline: the per-image presets hold none
    assert config.parse().hflip == 'auto' and config.parse(hflip='false').hflip is False
    assert config.parse(hflip='true').hflip is True and config.parse(hflip='AUTO').hflip == 'auto'
    for hflip in ('auto', True, False):
        assert not any(isinstance(t, transforms.T.RandomHorizontalFlip)
                       for t in transforms.augment_steps(config.parse(hflip=hflip), 32))


def test_dataset_normalisation_is_computed_once_into_the_plan_and_used(tmp_path):
    write_class_folders(tmp_path / 'train', ['a', 'b'], 3)
    plan = plan_for(train_data_root=str(tmp_path / 'train'), normalize='dataset', image_size=32, num_workers=0,
                    cache='none')
    from data import loaders
    train_set, val_set = loaders.build_train_val(plan)
    pixels = torch.stack([transforms.T.ToTensor()(Image.open(p).convert('RGB')) for p, _ in train_set.samples])
    assert plan.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert plan.std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-4)
    norm = [t for t in val_set.transform.transforms if isinstance(t, transforms.T.Normalize)][0]
    assert list(norm.mean) == list(plan.mean)


@pytest.mark.parametrize('name, kind', [('sgd', 'SGD'), ('adam', 'Adam'), ('adamw', 'AdamW'), ('radam', 'RAdam'),
                                        ('ranger', 'Ranger'), ('ranger_adabelief', 'RangerAdaBelief'),
                                        ('timm/lion', 'Lion')])
def test_optimizers_by_name_without_decay_on_biases_and_norm_weights(name, kind):
    model = models.build('SqueezeNet', 3)
    opt = build_optimizer(model, config.parse(optimizer=name, weight_decay=0.01))
    assert type(opt).__name__ == kind
    decays = {p.ndim > 1: g['weight_decay'] for g in opt.param_groups for p in g['params']}
    assert decays == {True: 0.01, False: 0.0}


def test_sgd_nesterov_and_ranger_lookahead_settings_reach_the_optimizer():
    model = models.build('SqueezeNet', 3)
    assert build_optimizer(model, config.parse(optimizer='sgd', nesterov=True)).defaults['nesterov'] is True
    opt = build_optimizer(model, config.parse(optimizer='ranger', ranger_k=4, ranger_alpha=0.3))
    assert (opt.defaults['k'], opt.defaults['alpha']) == (4, 0.3)


def test_cosine_warms_up_linearly_then_decays_to_min_lr():
    assert warmup_cosine_factor(0, 10, 110, 0.0) == pytest.approx(0.01)
    assert warmup_cosine_factor(5, 10, 110, 0.0) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine_factor(10, 10, 110, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine_factor(110, 10, 110, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize('name, every', [('cosine', 'iter'), ('onecycle', 'iter'), ('step', 'epoch'),
                                         ('multistep', 'epoch'), ('plateau', 'plateau')])
def test_each_scheduler_steps_when_it_should(name, every):
    model = models.build('SqueezeNet', 3)
    cfg = config.parse(scheduler=name, max_epoch=4, lr_step=1, lr_milestones='1', warmup_epochs=1)
    opt = build_optimizer(model, cfg)
    schedule = build_scheduler(opt, cfg, steps_per_epoch=5)
    assert schedule.every == every
    lrs = []
    for _ in range(4 * 5):
        opt.step()
        schedule.step_iter()
        lrs.append(opt.param_groups[0]['lr'])
    assert (len(set(lrs)) > 5) == (every == 'iter')
    schedule.step_epoch(1.0)
    if every == 'epoch':
        assert opt.param_groups[0]['lr'] == pytest.approx(cfg.lr * cfg.lr_decay)


@pytest.mark.parametrize('name', ['EfficientNet-B0', 'timm/resnet10t'])
def test_timm_backbones_build_offline_and_features_feed_the_head(name):
    model = models.build(name, 5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.head(model.forward_features(x)), model(x), atol=1e-5)
    assert model(x).shape == (2, 5) and model.model_name == name


def test_registry_lists_the_competition_backbones():
    names = models.list_models()
    for n in ('EfficientNet-B0', 'EfficientNet-B5', 'ResNeXt101_32x8d', 'SE-ResNeXt50_32x4d'):
        assert n in names
    with pytest.raises(ValueError, match='timm has no model'):
        models.build('timm/no_such_net', 3)


@pytest.mark.parametrize('kind', ['se', 'cbam'])
def test_attention_setting_adds_a_module_to_every_resnet34_block(kind):
    model = models.build('ResNet34', 4, attention=kind)
    assert sum(1 for m in model.modules() if hasattr(m, 'attention')) == 16  # 3 + 4 + 6 + 3 blocks
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match='works with ResNet34 and ResNet101'):
        models.build('SqueezeNet', 4, attention=kind)


def test_freeze_backbone_trains_only_the_head():
    model = models.build('SqueezeNet', 3, freeze_backbone=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ['net.classifier.1.weight', 'net.classifier.1.bias']


def _toy(accum=1, clip=0.0, ema=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    cfg = config.Plan.of(config.parse(accum_steps=accum, clip_grad=clip, ema=ema, ema_decay=0.5, max_epoch=15))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = build_scheduler(opt, cfg, 1)
    return model, opt, tricks.Trainer(model, opt, schedule, cfg)


def test_gradient_accumulation_steps_once_per_accum_batches_with_the_mean_gradient():
    x, y = torch.randn(4, 4), torch.tensor([0, 1, 1, 0])
    model, _, trainer = _toy(accum=2)
    ref, ref_opt, _ = _toy()
    for i in range(2):
        loss = torch.nn.functional.cross_entropy(model(x[2 * i:2 * i + 2]), y[2 * i:2 * i + 2])
        before = model.weight.detach().clone()
        trainer.backward(loss, i, 2, 0)
        assert torch.equal(before, model.weight) == (i == 0)
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    ref_opt.step()
    assert torch.allclose(model.weight, ref.weight, atol=1e-6) and trainer.step_count == 1


@pytest.mark.parametrize('unreadable_last', [False, True])
def test_accumulation_steps_on_each_groups_mean_and_nothing_carries_into_the_next_epoch(tmp_path, unreadable_last):
    """30 images in batches of 10 with accum_steps=2: each epoch steps on the mean of batches 0 and 1, then on batch
    2 alone -- also when a fourth batch, one unreadable file, is skipped at the epoch's end."""
    import copy
    from torchvision import transforms as T
    from data import loaders
    from data.dataset import BadFileLog, ImageFolderDataset
    from utils.dashboard.windows import RunDashboard
    root = write_class_folders(tmp_path / 'train', ['a', 'b', 'c'], 10)
    if unreadable_last:
        open(root / 'c' / 'zzz.png', 'wb').close()  # sorted last: the fourth batch holds only this file
    cfg = config.Plan.of(config.parse(accum_steps=2, mixup_prob=0, scheduler='none', batch_size=10, num_workers=0,
                                      max_epoch=2))
    loader = loaders.eval_loader(ImageFolderDataset.from_folder(str(root), transform=T.ToTensor()), cfg)
    assert len(loader) == 3 + unreadable_last
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = tricks.Trainer(model, opt, build_scheduler(opt, cfg, 2), cfg)
    vis = RunDashboard(cfg, str(tmp_path), ['a', 'b', 'c'], enabled=False)
    for epoch in range(2):
        engine.train_one_epoch(model, loader, torch.nn.CrossEntropyLoss(), opt, trainer.schedule, torch.device('cpu'),
                               epoch, cfg, vis, BadFileLog(), trainer=trainer)
    batches = [(x, y) for x, y, _ in loader if x is not None]
    for epoch in range(2):  # by hand: one SGD step per group on the mean of its batches' gradients
        for group in (batches[:2], batches[2:]):
            grads = []
            for x, y in group:
                ref.zero_grad()
                torch.nn.functional.cross_entropy(ref(x), y).backward()
                grads.append([p.grad.clone() for p in ref.parameters()])
            with torch.no_grad():
                for p, *g in zip(ref.parameters(), *grads):
                    p -= 0.1 * sum(g) / len(g)
    assert trainer.step_count == 4
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_gradient_clipping_bounds_the_update():
    model, _, trainer = _toy(clip=0.01)
    before = model.weight.detach().clone()
    trainer.backward(model(torch.full((1, 4), 100.0)).sum() * 100, 0, 1, 0)
    assert (model.weight - before).norm() <= 0.1 * 0.01 + 1e-6


def test_ema_is_the_moving_average_of_the_weights_with_timm_warmup():
    model, _, trainer = _toy(ema=True)  # ema_decay=0.5
    average = None
    for step in range(1, 5):
        trainer.backward(model(torch.randn(2, 4)).sum(), step - 1, 4, 0)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # ModelEmaV3's warmup: decay 1 - step^(-2/3), capped at ema_decay (0, 0.37, then 0.5, 0.5)
        decay = min(0.5, 1 - step ** (-2 / 3))
        average = weights if average is None else {k: decay * average[k] + (1 - decay) * weights[k] for k in weights}
        for k, v in trainer.ema.module.state_dict().items():
            assert torch.allclose(v, average[k], atol=1e-6), (step, k)
    assert not torch.equal(trainer.ema.module.weight, model.weight) and trainer.state_dict()['ema_step'] == 4


def _fit(tmp_path, data, name, **kw):
    cfg = config.parse(train_data_root=str(data), checkpoint_dir=str(tmp_path), run_name=name,
                       **{**FAST, **kw})
    return engine.fit(cfg)


def test_ranger_ema_cutmix_run_resumed_matches_an_uninterrupted_one(tiny_data, tmp_path):
    tricks_on = dict(optimizer='ranger', ranger_k=2, ema=True, cutmix_prob=0.5, mixup_prob=0.3, loss='joint',
                     scheduler='step', lr_step=1, sampler='imbalanced', augment='trivialaugment', batch_size=6)
    full = _fit(tmp_path, tiny_data / 'train', 'full', max_epoch=2, **tricks_on)
    part = _fit(tmp_path, tiny_data / 'train', 'part', max_epoch=1, **tricks_on)
    engine.fit(config.parse(resume=os.path.join(part, 'last.pth'), max_epoch=2))
    a = torch.load(os.path.join(full, 'last.pth'), weights_only=True)
    b = torch.load(os.path.join(part, 'last.pth'), weights_only=True)
    for key in ('model', 'ema'):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    slow_a, slow_b = a['optimizer']['state'][0]['slow_buffer'], b['optimizer']['state'][0]['slow_buffer']
    assert torch.equal(slow_a, slow_b) and a['ema_step'] == b['ema_step'] > 0
    assert os.path.exists(os.path.join(full, 'best_model_ema.pth'))
    rows = [json.loads(line) for line in open(os.path.join(full, 'metrics.jsonl'))]
    assert 'val_acc_ema' in rows[0]
    steps = open(os.path.join(full, 'lr.csv')).read().splitlines()  # the learning rate of every step
    assert len(steps) == a['ema_step'] and [s.split(',')[0] for s in steps] == [str(i + 1) for i in range(len(steps))]


def test_issue_recipe_settings_train_and_evaluate_resnet34_with_cbam(tiny_data, tmp_path):
    run = _fit(tmp_path, tiny_data / 'train', 'recipe', model='ResNet34', attention='cbam', loss='joint',
               optimizer='ranger', cutmix_prob=0.5, sampler='imbalanced', scheduler='cosine', normalize='dataset')
    cfg = config.parse(load_path=os.path.join(run, 'best_model.pth'), num_workers=0)
    model, ecfg, ckpt, _ = loop.load_for_eval(cfg)
    assert sum(1 for m in model.modules() if hasattr(m, 'attention')) == 16
    assert list(ecfg.mean) == ckpt['plan']['mean'] and ecfg.normalize == 'dataset' and len(ecfg.mean) == 3


def test_mixup_is_the_default_mixing_and_asking_for_cutmix_replaces_it():
    assert config.parse().mixup_prob == 0.5 and config.parse().cutmix_prob == 0
    assert config.parse(cutmix_prob=0.5).mixup_prob == 0  # the write-up's recipe gets CutMix alone
    assert config.parse(cutmix_prob=0.5, mixup_prob=0.3).mixup_prob == 0.3


def test_auto_attention_is_cbam_for_resnets_from_scratch_only(tmp_path):
    assert models.resolve_attention('resnet34', 'auto') == 'cbam'
    assert models.resolve_attention('ResNet101', 'auto') == 'cbam'
    assert models.resolve_attention('SqueezeNet', 'auto') == 'none'
    assert models.resolve_attention('ResNet34', 'se') == 'se'
    plain = str(tmp_path / 'torchvision_resnet34.pth')  # weights from elsewhere: a bare state_dict
    torch.save(models.build('ResNet34', 10).net.state_dict(), plain)
    assert models.resolve_attention('ResNet34', 'auto', pretrained_path=plain) == 'none'
    assert pretrained.decide(config.Plan.of(config.parse(pretrained_path=plain)))['normalize'] == 'imagenet'


def test_default_run_records_the_resolved_recipe_and_evaluates_back(tiny_data, tmp_path):
    """A user who changes nothing trains ResNet34 with CBAM on the data's own statistics; the checkpoint says
    so and evaluates to the same validation accuracy."""
    run = engine.fit(config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path),
                                  run_name='defaults', max_epoch=1, batch_size=8, num_workers=0, vis=False,
                                  image_size=32))
    stored = json.load(open(os.path.join(run, 'config.json')))['used']
    assert (stored['attention'], stored['normalize'], stored['loss'], stored['optimizer'], stored['scheduler']) == \
        ('cbam', 'dataset', 'label_smooth', 'adamw', 'onecycle')
    ckpt = torch.load(os.path.join(run, 'best_model.pth'), weights_only=True)
    assert sum('.attention.' in key for key in ckpt['model']) > 16  # a module in each of the 16 blocks
    model, cfg, ckpt, device = loop.load_for_eval(config.parse(load_path=os.path.join(run, 'best_model.pth'),
                                                                 num_workers=0))
    assert (list(cfg.mean), list(cfg.std)) == (stored['mean'], stored['std'])
    result = loop.evaluate_checkpoint(config.parse(load_path=os.path.join(run, 'best_model.pth'), num_workers=0,
                                                     vis=False), 'val')
    assert result['top1'] == pytest.approx(ckpt['best_metric'])

    # Fine-tuning from that checkpoint with the defaults keeps its attention and its kind of normalisation.
    tuned = engine.fit(config.parse(train_data_root=str(tiny_data / 'train'), checkpoint_dir=str(tmp_path),
                                    run_name='tuned', pretrained_path=os.path.join(run, 'best_model.pth'), max_epoch=1,
                                    batch_size=8, num_workers=0, vis=False, image_size=32))
    stored = json.load(open(os.path.join(tuned, 'config.json')))['used']
    assert (stored['attention'], stored['normalize']) == ('cbam', 'dataset')


def test_the_choices_config_checks_are_what_the_registries_build():
    from data.samplers import SAMPLERS
    from utils.train.losses import LOSSES
    from utils.train.optim import OPTIMIZERS, SCHEDULERS
    choices = config.choices()
    assert set(choices['sampler']) == set(SAMPLERS) and set(choices['loss']) == set(LOSSES)
    assert set(choices['optimizer']) == set(OPTIMIZERS) | {config.TIMM}
    assert set(choices['scheduler']) == set(SCHEDULERS)


def test_a_schedule_of_unresolved_auto_epochs_is_refused_as_a_bug():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r'max_epoch is still 0 \(auto\)'):
        build_scheduler(opt, config.parse(), 4)  # engine.fit resolves it from the training set first
    assert build_scheduler(opt, config.parse(), 4, epochs=3) is not None
