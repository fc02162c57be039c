"""Train and eval transform presets (small callables, as in torchvision's reference scripts)."""
from torchvision import transforms as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def train_transform(cfg, image_size):
    """Resize to a square, then the augmentation preset named by cfg.augment."""
    steps = [T.Resize((image_size, image_size))]
    if cfg.augment == 'basic':
        # Pad-and-crop: a small translation that never leaves the frame (Krizhevsky et al., 2012).
        steps.append(T.RandomCrop(image_size, padding=max(1, image_size // 8), padding_mode='edge'))
    elif cfg.augment != 'none':
        raise ValueError(f'unknown --augment={cfg.augment!r}; choose one of: {", ".join(AUGMENTS)}')
    return T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(cfg, image_size):
    return T.Compose([T.Resize((image_size, image_size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


AUGMENTS = ('none', 'basic')
