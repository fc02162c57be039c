"""From settings to datasets and DataLoaders: data roots (or the demo), the validation split, loaders."""
import os

import torch
from torch.utils.data import DataLoader

from config import UserError
from . import cache, manifest, transforms
from .dataset import (ImageFolderDataset, auto_image_size, check_classes, collate, find_classes, scan, short,
                      stratified_split)
from .demo import ensure_demo


def resolve_roots(cfg):
    """Point the data roots at the bundled demo when the user gave none and ./data/train does not exist."""
    given = getattr(cfg, 'given', set())
    if 'train_data_root' in given or os.path.isdir(cfg.train_data_root) or cfg.manifest:
        return cfg
    root = ensure_demo()
    print(f'no data at {cfg.train_data_root}: using the bundled handwritten-digits demo in {root}')
    cfg.train_data_root = os.path.join(root, 'train')
    if 'val_data_root' not in given:
        cfg.val_data_root = os.path.join(root, 'val')
    if 'test_data_root' not in given:
        cfg.test_data_root = os.path.join(root, 'test')
    return cfg


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
    on_gpu = cfg.use_gpu and torch.cuda.is_available()
    if not on_gpu and cpus <= 2:
        return 0
    return max(0, min(8, cpus - 1))


def train_val_samples(cfg, classes=None):
    """(classes, train samples, val samples): the one split every command uses. The images are train_data_root's
    or --manifest's training rows; validation is, first that applies: with --kfold, the held-out fold (of a
    manifest's training and val rows together); the manifest's val rows; --val-data-root (when the folder exists;
    with a manifest, when given); a stratified split. With `classes` (a checkpoint's), other classes are refused."""
    if cfg.manifest:
        found, samples, val = manifest.train_val_rows(cfg)
        source, val_root = cfg.manifest, 'val_data_root' in getattr(cfg, 'given', ())
    else:
        found = find_classes(cfg.train_data_root)
        samples, val = scan(cfg.train_data_root, found), []
        source, val_root = cfg.train_data_root, os.path.isdir(cfg.val_data_root)
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
    elif val:
        return found, samples, val
    elif val_root:
        return found, samples, ImageFolderDataset.from_folder(cfg.val_data_root, found).samples
    else:
        train_idx, val_idx = stratified_split([label for _, label in samples], cfg.val_ratio, cfg.seed)
        if not val_idx:
            raise UserError(f'{source} is too small to hold out a validation split; add images or give '
                                   f'--val-data-root')
    return found, [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def image_size(cfg, samples):
    return cfg.image_size or auto_image_size(samples, seed=cfg.seed)


def build_train_val(cfg, classes=None):
    """Training and validation datasets of train_val_samples with their transforms; fixes cfg.image_size when
    it was 0 (auto). `classes` (a checkpoint's): the data must have exactly these."""
    from . import hard
    hard_paths = hard.listed(cfg)
    classes, train, val = train_val_samples(cfg, classes)
    train = manifest.add_extra(cfg, classes, train)
    cfg.image_size = image_size(cfg, train)
    cfg.cache = cache.choose(cfg, len(train) + len(val))  # 'auto' -> what is used
    if cfg.cache != 'none':  # decoded once, augmented per batch on the device
        train_set, val_set = cache.build_train_val(cfg, classes, train, val, num_workers(cfg, decoding=True))
    else:
        train_set = ImageFolderDataset(train, classes, transforms.train_transform(cfg, cfg.image_size))
        val_set = ImageFolderDataset(val, classes, transforms.eval_transform(cfg, cfg.image_size))
    return hard.upsample(train_set, cfg, hard_paths), val_set


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
    return torch.cuda.is_available() and cfg.use_gpu and cfg.cache != 'gpu'


def prefetch(cfg, workers):
    return cfg.prefetch_factor if workers > 0 else None
