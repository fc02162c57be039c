"""Train and eval transform presets (small callables, as in torchvision's reference scripts)."""
from torchvision import transforms as T

from config import IMAGENET_MEAN, IMAGENET_STD, UserError  # noqa: F401 (the statistics, importable from here)


def pad_and_crop(image_size):
    # A small translation that never leaves the frame (Krizhevsky et al., 2012).
    return T.RandomCrop(image_size, padding=max(1, image_size // 8), padding_mode='edge')


def augment_steps(cfg, image_size):
    """The PIL-image steps of the preset cfg.augment, plus the jitter (flips come per class, on the batch: see
    data/mix.py flip_by_class)."""
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
    if cfg.jitter > 0:
        steps.append(T.ColorJitter(brightness=cfg.jitter, contrast=cfg.jitter))
    return steps


def norm_stats(plan):
    """(mean, std) of the plan's input normalisation."""
    return tuple(plan.mean), tuple(plan.std)


def resize(plan, image_size):
    """The resize to a square of every image, with the plan's interpolation (the published weights' own)."""
    return T.Resize((image_size, image_size), interpolation=T.InterpolationMode(plan.interpolation))


def train_transform(cfg, image_size):
    """Resize to a square, the augmentation preset, tensor, normalisation, then RandomErasing if asked for."""
    steps = [resize(cfg, image_size)] + augment_steps(cfg, image_size)
    steps += [T.ToTensor(), T.Normalize(*norm_stats(cfg))]
    if cfg.erasing > 0:
        steps.append(T.RandomErasing(p=cfg.erasing))
    return T.Compose(steps)


def eval_transform(cfg, image_size):
    return T.Compose([resize(cfg, image_size), T.ToTensor(), T.Normalize(*norm_stats(cfg))])


def dataset_stats(samples, image_size, interpolation='bilinear'):
    """Per-channel mean and std of the images in `samples` [(path, label)], resized as for training."""
    from .dataset import load_rgb
    mode, total, total_sq, n = T.InterpolationMode(interpolation), 0, 0, 0
    to_tensor = T.Compose([T.Resize((image_size, image_size), interpolation=mode), T.ToTensor()])
    for path, _ in samples:
        try:
            x = to_tensor(load_rgb(path)).double().flatten(1)
        except (OSError, ValueError, SyntaxError):
            continue
        total, total_sq, n = total + x.sum(1), total_sq + (x * x).sum(1), n + x.shape[1]
    if not n:
        raise UserError('--normalize=dataset found no readable training image to compute statistics from')
    mean = total / n
    std = (total_sq / n - mean * mean).clamp(min=1e-12).sqrt().clamp(min=1e-3)
    return {'mean': [round(float(v), 6) for v in mean], 'std': [round(float(v), 6) for v in std]}
