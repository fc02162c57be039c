"""The plan of a training run, made once: `resolve` decides every 'auto' of what the user asked against the data,
the machine, the published weights and a resumed checkpoint, and runs every check, before any file of the run is
written. What it returns, a frozen config.Plan, is what `fit`, `tune`, `lr_find`, the checkpoints, the report and
every later evaluation read; config.json keeps it as `used` beside what was `asked`.

    asked (config.parse)  --resolve-->  Plan  -->  fit: data, model, loop; checkpoints {'plan', 'asked'}
                                                   evaluation: config.stored_plan(checkpoint) + runtime settings
"""
import dataclasses
import os

import torch

import config
import models
from data import cache, loaders, manifest, transforms
from data.dataset import auto_image_size
from data.flips import describe as describe_flips, policy as flip_policy
from models import pretrained
from utils.io import check_compatible, check_room, estimated_size
from utils.train import distributed
from utils.train.precision import amp_dtype


def resolve(cfg, resumed=None, ddp=None):
    """(plan, (training samples, validation samples)) for a run of the settings `cfg`, resuming the checkpoint dict
    `resumed` when given (its plan, with what `cfg` gives on top: config.reapply). `ddp`: the torchrun context,
    whose rank 0 writes the demo folder first. UserError for anything that stops the run."""
    ddp = ddp or distributed.Context()
    if resumed is not None:
        plan = config.reapply(config.stored_plan(resumed), cfg, cfg.resume)
        check_compatible(resumed, plan.model, path=cfg.resume)
        weights = {}
    else:
        plan = config.Plan.of(cfg)
        # an explicit stem the model or the weights cannot take stops here, before weights are fetched
        models.resolve_stem(plan.model, plan.stem, plan.image_size, plan.pretrained_path, plan.pretrained)
        weights = distributed.main_first(ddp, pretrained.decide, plan)
    plan = distributed.main_first(ddp, loaders.resolve_roots, plan, cfg.given)
    classes, train, val, where = loaders.train_val_samples(plan, plan.classes or None, with_source=True)
    train = manifest.add_extra(plan, classes, train)
    image_size = plan.image_size or weights.get('image_size') or auto_image_size(train, seed=plan.seed)
    plan = dataclasses.replace(
        plan, classes=tuple(classes), image_size=image_size,
        stem=models.resolve_stem(plan.model, plan.stem, image_size, plan.pretrained_path, plan.pretrained),
        attention=models.resolve_attention(plan.model, plan.attention, plan.pretrained_path, plan.pretrained),
        max_epoch=plan.max_epoch or config.auto_epochs(len(train)),
        split={'train': len(train), 'val': len(val), 'validation': where},
        **{k: v for k, v in weights.items() if k in ('pretrained_weights', 'interpolation')})
    if not cfg.max_epoch and resumed is None:
        print(f'max_epoch: auto = {plan.max_epoch} epochs for {len(train)} training images (at least '
              f'{config.AUTO_IMAGES} images seen, {config.AUTO_EPOCHS[0]}..{config.AUTO_EPOCHS[1]} epochs)')
    if not plan.flips:  # a new run (a resumed one keeps its own)
        flips, probe = flip_policy(plan.hflip, train, classes, plan.seed)
        plan = dataclasses.replace(plan, flips=flips, flip_probe=probe)
        print(f'hflip {plan.hflip}: {describe_flips(flips, classes)}'
              + (f' (probe: {probe["images"]} images, {probe["seconds"]} s)' if probe else ''))
    plan = machine(plan, cfg, ddp, len(train) + len(val))
    check_room_for(plan, resumed is not None)
    if resumed is None:  # the one pass over the training images, once every check has passed
        plan = dataclasses.replace(plan, **normalization(plan, weights, train, image_size))
    return plan, (train, val)


def check_room_for(plan, resuming):
    """UserError unless the run's folder can be written and has room for its checkpoints: last.pth, best_model.pth
    and the temporary file of the next save for a new run (the checkpoints of a resumed one exist)."""
    size = estimated_size(models.parameter_count(plan.model, len(plan.classes), plan.attention, plan.stem), plan.ema)
    if resuming:
        check_room(os.path.dirname(os.path.abspath(plan.resume)), size)
    else:
        check_room(plan.checkpoint_dir, 3 * size)


def normalization(plan, weights, train, image_size):
    """{normalize, mean, std} of a new run: --normalize with auto decided -- the statistics the starting weights
    were trained with (`weights`: pretrained.decide), else the training images' own -- and its statistics (the
    training images' own are computed here, once)."""
    name = weights.get('normalize', 'dataset') if plan.normalize == 'auto' else plan.normalize
    if name == 'dataset':
        stats = transforms.dataset_stats(train, image_size, plan.interpolation)
        print(f'normalisation from the training images: mean {stats["mean"]}, std {stats["std"]}')
        return {'normalize': name, 'mean': tuple(stats['mean']), 'std': tuple(stats['std'])}
    if name == 'imagenet':
        return {'normalize': name, 'mean': config.IMAGENET_MEAN, 'std': config.IMAGENET_STD}
    return {'normalize': name, 'mean': weights['mean'], 'std': weights['std']}


def machine(plan, cfg, ddp, n_images):
    """The plan with what this machine decides: the device, the cache, the loading workers, the precision and
    the memory format, each recorded in machine_chose when it was asked as auto."""
    device = distributed.device(ddp, config.select_device(plan))
    plan = dataclasses.replace(plan, device=str(device))
    cuda = device.type == 'cuda'
    if not cuda and (cfg.amp not in ('auto', 'off') or cfg.channels_last == 'on'):
        print('note: --amp and --channels-last apply on CUDA only; the CPU trains in fp32, contiguous')
    plan = dataclasses.replace(plan, cache=cache.choose(plan, n_images))
    dtype = amp_dtype(plan, device)
    decided = dict(num_workers=loaders.num_workers(plan),
                   amp='off' if dtype is None else 'bf16' if dtype == torch.bfloat16 else 'fp16',
                   channels_last='on' if cuda and plan.channels_last != 'off' else 'off')
    chose = tuple(k for k in config.MACHINE if getattr(cfg, k) in ('auto', -1))
    return dataclasses.replace(plan, **decided, machine_chose=chose)


def with_lr(plan, lr, record):
    """The plan once --lr=auto's range test has chosen the learning rate (its `record` kept as lr_find)."""
    return dataclasses.replace(plan, lr=lr, lr_find=record)


SHOWN = 110  # characters of a value the printed plan shows (config.json holds it whole)


def describe(plan, cfg):
    """The plan as printed at the start of a run: one `name = value` line each, what was decided marked, a long
    value (the flip probe's record, the flips of many classes) cut short."""
    lines, settings = [], {n for n, *_ in config.settings()}
    for name, value in plan.to_dict().items():
        asked = getattr(cfg, name, None)
        mark = ' (machine)' if name in plan.machine_chose else \
            ' (auto)' if name in settings and asked in ('auto', 0) and value != asked else ''
        text = repr(value)
        lines.append(f'  {name} = {text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."}{mark}')
    return 'plan:\n' + '\n'.join(lines)
