"""From settings to datasets and DataLoaders: data roots (or the demo), the validation split, loaders."""
import dataclasses
import os

import torch
from torch.utils.data import DataLoader

from config import UserError, on_cuda
from . import cache, manifest, transforms
from .dataset import ImageFolderDataset, check_classes, collate, find_classes, scan, short, stratified_split
from .demo import ensure_demo


def resolve_roots(cfg, given=None):
    """`cfg` (settings or a plan) with its data roots decided: the bundled demo when the user gave no training data
    and ./data/train does not exist; with --manifest, no validation folder unless one was given (`given`: the
    settings the user gave, default cfg.given), so that '' means "no validation folder"."""
    given = getattr(cfg, 'given', ()) if given is None else given
    if cfg.manifest:
        return cfg if 'val_data_root' in given else dataclasses.replace(cfg, val_data_root='')
    if 'train_data_root' in given or os.path.isdir(cfg.train_data_root):
        return cfg
    root = ensure_demo()
    print(f'no data at {cfg.train_data_root}: using the bundled handwritten-digits demo in {root}')
    roots = {'train_data_root': os.path.join(root, 'train')}
    roots.update({k: os.path.join(root, split) for k, split in (('val_data_root', 'val'), ('test_data_root', 'test'))
                  if k not in given})
    return dataclasses.replace(cfg, **roots)


def num_workers(cfg, decoding=False):
    """cfg.num_workers, or the auto choice: none for cached data (nothing left to decode) unless `decoding` (the
    cache's one decoding pass), none when the model trains on a CPU of two cores or fewer (workers then take
    cores from the model: docs/speed.md); otherwise the CPUs this process may use (its share under
    torchrun) less one for the compute threads, at most 8."""
    if cfg.num_workers >= 0:
        return cfg.num_workers
    if cfg.cache in ('ram', 'gpu') and not decoding:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    cpus //= int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    if not on_cuda(cfg) and cpus <= 2:
        return 0
    return max(0, min(8, cpus - 1))


def train_val_samples(cfg, classes=None, with_source=False):
    """(classes, train samples, val samples): the one split every command uses; `with_source`: and where the
    validation split came from, in words. The images are train_data_root's or --manifest's training rows;
    validation is, first that applies: with --kfold, the held-out fold (of a manifest's training and val rows
    together); the manifest's val rows; --val-data-root (when it names a folder: see `resolve_roots`); a stratified
    split. With `classes` (a checkpoint's), other classes are refused."""
    if cfg.manifest:
        found, samples, val = manifest.train_val_rows(cfg)
        source = cfg.manifest
    else:
        found = find_classes(cfg.train_data_root)
        samples, val = scan(cfg.train_data_root, found), []
        source = cfg.train_data_root
    if classes is not None and list(classes) != found:
        raise UserError(f'the training data {source} has other classes than the checkpoint: {short(found)} '
                        f'instead of {short(classes)}; give the data it was trained on (--train-data-root '
                        f'or --manifest)')
    if cfg.kfold:
        samples, val = samples + val, []
    check_classes(found, samples, source, cfg.allow_empty_classes)
    if cfg.kfold:
        from data.folds import kfold_indices
        train_idx, val_idx = kfold_indices([label for _, label in samples], cfg.kfold, cfg.fold, cfg.seed)
        where = f'fold {cfg.fold} of {cfg.kfold} (seed {cfg.seed})'
    elif val:
        train_idx, val_idx, where = None, None, f'the val rows of {source}'
    elif has_val_folder(cfg):
        val = ImageFolderDataset.from_folder(cfg.val_data_root, found).samples
        train_idx, val_idx, where = None, None, cfg.val_data_root
    else:
        train_idx, val_idx = stratified_split([label for _, label in samples], cfg.val_ratio, cfg.seed)
        if not val_idx:
            raise UserError(f'{source} is too small to hold out a validation split; add images or give '
                            f'--val-data-root')
        where = f'a stratified {cfg.val_ratio:g} of {source} (seed {cfg.seed})'
    if train_idx is not None:
        samples, val = [samples[i] for i in train_idx], [samples[i] for i in val_idx]
    return (found, samples, val, where) if with_source else (found, samples, val)


def has_val_folder(cfg):
    """Whether validation comes from --val-data-root: it is given with a manifest (see `resolve_roots`), or names a
    folder."""
    return bool(cfg.val_data_root) and (bool(cfg.manifest) or os.path.isdir(cfg.val_data_root))


def datasets(plan, train, val):
    """Training and validation datasets of the samples `train` and `val` as the plan says: decoded once into the
    cache (plan.cache ram or gpu, augmented per batch on the device) or read per image with the plan's transforms;
    the images --hard-list names upsampled."""
    from . import hard
    classes = plan.classes
    if plan.cache != 'none':
        train_set, val_set = cache.build_train_val(plan, classes, train, val, num_workers(plan, decoding=True))
    else:
        train_set = ImageFolderDataset(train, classes, transforms.train_transform(plan, plan.image_size))
        val_set = ImageFolderDataset(val, classes, transforms.eval_transform(plan, plan.image_size))
    return hard.upsample(train_set, plan, hard.listed(plan)), val_set


def build_train_val(plan, classes=None):
    """The training and validation datasets of a plan (`datasets` of `train_val_samples`); `classes` (a
    checkpoint's): the data must have exactly these."""
    found, train, val = train_val_samples(plan, classes)
    return datasets(plan, manifest.add_extra(plan, found, train), val)


def eval_dataset(cfg, root, classes):
    """A labelled folder to evaluate; classes it has beyond the training ones are refused."""
    return ImageFolderDataset.from_folder(root, classes, transforms.eval_transform(cfg, cfg.image_size))


def seed_worker(worker_id):
    import random
    import numpy as np
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def train_loader(dataset, cfg, sampler, generator):
    workers = num_workers(cfg)
    # A last batch of one image would break batch norm; drop it only then.
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, worker_init_fn=seed_worker, generator=generator,
                      persistent_workers=workers > 0, pin_memory=pin(cfg),
                      prefetch_factor=prefetch(cfg, workers), drop_last=len(dataset) % cfg.batch_size == 1)


def eval_loader(dataset, cfg):
    workers = num_workers(cfg)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate, pin_memory=pin(cfg),
                      persistent_workers=workers > 0, prefetch_factor=prefetch(cfg, workers))


def pin(cfg):
    """Pinned host batches for CUDA training, so that the copies to the device need not wait; the GPU cache's
    batches are on the device already."""
    return on_cuda(cfg) and cfg.cache != 'gpu'


def prefetch(cfg, workers):
    return cfg.prefetch_factor if workers > 0 else None
