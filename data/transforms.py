"""Train and eval transform presets (small callables, as in torchvision's reference scripts)."""
import json
import os

from torchvision import transforms as T

from config import UserError
from utils.io import write_json

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORM_FILE = 'normalization.json'


def pad_and_crop(image_size):
    # A small translation that never leaves the frame (Krizhevsky et al., 2012).
    return T.RandomCrop(image_size, padding=max(1, image_size // 8), padding_mode='edge')


def augment_steps(cfg, image_size):
    """The PIL-image steps of the preset cfg.augment, plus the opt-in flip and jitter."""
    name = cfg.augment
    steps = []
    if name in ('basic', 'randaugment', 'trivialaugment'):
        steps.append(pad_and_crop(image_size))
    elif name == 'affine':
        steps.append(T.RandomAffine(degrees=0, translate=(0.05, 0.05)))
    elif name == 'resized':
        steps.append(T.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True))
    if name == 'randaugment':
        steps.append(T.RandAugment())
    elif name == 'trivialaugment':
        steps.append(T.TrivialAugmentWide())
    if cfg.hflip:
        steps.append(T.RandomHorizontalFlip())
    if cfg.jitter > 0:
        steps.append(T.ColorJitter(brightness=cfg.jitter, contrast=cfg.jitter))
    return steps


def normalize_name(cfg):
    """cfg.normalize with 'auto' made concrete: the training set's own statistics when training from scratch;
    ImageNet's with --pretrained weights; starting from `pretrained_path`, the data's own when that checkpoint of
    this toolkit used its data's own, else ImageNet's (which other pretrained weights expect)."""
    name = cfg.normalize
    if name == 'auto' and cfg.pretrained.lower() != 'none':
        return 'imagenet'  # published weights expect their training statistics
    if name == 'auto':
        path = cfg.pretrained_path
        if not path:
            return 'dataset'
        from utils.io import stored_settings
        return 'dataset' if stored_settings(path).get('normalize') == 'dataset' else 'imagenet'
    return name


def norm_stats(cfg):
    """(mean, std): ImageNet's, or the training set's own stored on cfg.norm_stats by `prepare_normalization`."""
    name = normalize_name(cfg)
    stats = getattr(cfg, 'norm_stats', None)
    if name == 'dataset' and stats:
        return tuple(stats['mean']), tuple(stats['std'])
    return IMAGENET_MEAN, IMAGENET_STD


def train_transform(cfg, image_size):
    """Resize to a square, the augmentation preset, tensor, normalisation, then RandomErasing if asked for."""
    steps = [T.Resize((image_size, image_size))] + augment_steps(cfg, image_size)
    steps += [T.ToTensor(), T.Normalize(*norm_stats(cfg))]
    if cfg.erasing > 0:
        steps.append(T.RandomErasing(p=cfg.erasing))
    return T.Compose(steps)


def eval_transform(cfg, image_size):
    return T.Compose([T.Resize((image_size, image_size)), T.ToTensor(), T.Normalize(*norm_stats(cfg))])


def dataset_stats(samples, image_size):
    """Per-channel mean and std of the images in `samples` [(path, label)], resized as for training."""
    from .dataset import load_rgb
    resize, total, total_sq, n = T.Compose([T.Resize((image_size, image_size)), T.ToTensor()]), 0, 0, 0
    for path, _ in samples:
        try:
            x = resize(load_rgb(path)).double().flatten(1)
        except (OSError, ValueError, SyntaxError):
            continue
        total, total_sq, n = total + x.sum(1), total_sq + (x * x).sum(1), n + x.shape[1]
    if not n:
        raise UserError('--normalize=dataset found no readable training image to compute statistics from')
    mean = total / n
    std = (total_sq / n - mean * mean).clamp(min=1e-12).sqrt().clamp(min=1e-3)
    return {'mean': [round(float(v), 6) for v in mean], 'std': [round(float(v), 6) for v in std]}


def prepare_normalization(cfg, train_set, val_set, run_dir):
    """For --normalize=dataset: compute the training set's statistics once (cached as run_dir/normalization.json,
    reused on resume), store them on cfg.norm_stats and rebuild both datasets' transforms. Returns the stats."""
    if normalize_name(cfg) != 'dataset':
        return None
    path = os.path.join(run_dir, NORM_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            stats = json.load(f)
    else:
        stats = dataset_stats(train_set.samples, cfg.image_size)
        write_json(stats, path)
        print(f'normalisation from the training images: mean {stats["mean"]}, std {stats["std"]} (cached in {path})')
    cfg.norm_stats = stats
    train_set.transform = train_transform(cfg, cfg.image_size)
    val_set.transform = eval_transform(cfg, cfg.image_size)
    return stats
